// Image files into model inputs (needs the edgenn::image target: stb_image).
#pragma once

#include "edgenn/image/load_image.hpp"
