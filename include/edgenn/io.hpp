// Linux-side file formats: safetensors, edgenn weights files, data sets. These parts may
// allocate and report errors as io::Result values with messages that name the problem.
#pragma once

#include "edgenn/io/file.hpp"
#include "edgenn/io/idx.hpp"
#include "edgenn/io/model_file.hpp"
#include "edgenn/io/result.hpp"
#include "edgenn/io/safetensors.hpp"
