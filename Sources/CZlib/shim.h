/* Umbrella header for the system library wrapped by CZlib. Module map only; no code. */
#include <zlib.h>
