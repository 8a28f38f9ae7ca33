/* Umbrella header for the system library wrapped by CLZ4. Module map only; no code. */
#include <lz4.h>
#include <lz4hc.h>
