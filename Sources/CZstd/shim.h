/* Umbrella header for the system library wrapped by CZstd. Module map only; no code. */
#include <zstd.h>
#include <zstd_errors.h>
