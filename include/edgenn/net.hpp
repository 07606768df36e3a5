// The edge–cloud hop over ZeroMQ (Linux; target edgenn::net): the versioned message format
// (docs/protocol.md), the cloud server and the edge client. Not part of <edgenn/edgenn.hpp>:
// firmware never pulls in networking.
#pragma once

#include "edgenn/net/batcher.hpp"
#include "edgenn/net/cloud_client.hpp"
#include "edgenn/net/cloud_server.hpp"
#include "edgenn/net/curve_keys.hpp"
#include "edgenn/net/model_runner.hpp"
#include "edgenn/net/protocol.hpp"
#include "edgenn/net/synthetic_model.hpp"
#include "edgenn/net/zmq_io.hpp"
