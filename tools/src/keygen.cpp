// edgenn-keygen: make a CURVE keypair for the edge–cloud hop (docs/protocol.md section 6),
// as Z85 text files NAME.key (secret, mode 0600) and NAME.pub (public).
//
//   edgenn-keygen server            # server.key for edgenn-cloud --curve-secret-key, server.pub for clients
//   edgenn-keygen edge1             # a client; append edge1.pub to the server's --authorized-keys file
#include <sys/stat.h>

#include <cstdio>

#include <CLI/CLI.hpp>

#include "edgenn/net/curve_keys.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Write a CURVE keypair as Z85 text: NAME.key (secret) and NAME.pub (public)"};
  std::string name;
  bool force = false;
  app.add_option("name", name, "path prefix of the two files")->required();
  app.add_flag("--force", force, "overwrite existing files");
  CLI11_PARSE(app, argc, argv);

  const std::string secret_path = name + ".key", public_path = name + ".pub";
  struct stat st{};
  if (!force && (::stat(secret_path.c_str(), &st) == 0 || ::stat(public_path.c_str(), &st) == 0))
    return std::fprintf(stderr, "edgenn-keygen: %s or %s exists (use --force to overwrite)\n", secret_path.c_str(),
                        public_path.c_str()),
           1;
  auto kp = edgenn::net::generate_curve_keypair();
  if (!kp) return std::fprintf(stderr, "edgenn-keygen: %s\n", kp.error().c_str()), 1;
  if (auto ok = edgenn::net::write_key_file(secret_path, kp->secret_key, "edgenn CURVE secret key (keep private)", true); !ok)
    return std::fprintf(stderr, "edgenn-keygen: %s\n", ok.error().c_str()), 1;
  if (auto ok = edgenn::net::write_key_file(public_path, kp->public_key, "edgenn CURVE public key", false); !ok)
    return std::fprintf(stderr, "edgenn-keygen: %s\n", ok.error().c_str()), 1;
  std::printf("%s  (public key; secret in %s)\n", kp->public_key.c_str(), secret_path.c_str());
  return 0;
}
