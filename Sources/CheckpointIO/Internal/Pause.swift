import Glibc

/// Blocks the calling thread for `nanoseconds` (the remainder again after a
/// signal interrupted the wait): the poll interval of waits on storage.
/// Never called on Swift concurrency's cooperative threads. `nanosleep`.
func pauseThread(nanoseconds: UInt64) {
    var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
