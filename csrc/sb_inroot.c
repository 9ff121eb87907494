#include "sb_inroot.h"
