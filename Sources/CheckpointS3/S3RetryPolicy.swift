import BlobCodec
import Foundation

/// When and how often a failed S3 request is tried again: exponential backoff
/// with full jitter (the delay before retry *n* is uniform in
/// `0...min(maximumDelay, baseDelay × 2ⁿ)`).
///
/// Retried, for idempotent requests only: no response (connection refused or
/// reset, a timeout, a body cut short), HTTP 500, 502, 503 (`SlowDown`), 504,
/// 429, and the error codes `RequestTimeout`, `InternalError`, `SlowDown`,
/// `Throttling`. Everything else fails at once.
public struct S3RetryPolicy: Sendable {
    /// Attempts in all, the first included (default 6).
    public var maximumAttempts: Int = 6
    /// The backoff's first ceiling, in seconds (default 0.05).
    public var baseDelay: Double = 0.05
    /// The backoff's largest ceiling, in seconds (default 5).
    public var maximumDelay: Double = 5

    public init(maximumAttempts: Int = 6, baseDelay: Double = 0.05, maximumDelay: Double = 5) {
        self.maximumAttempts = maximumAttempts
        self.baseDelay = baseDelay
        self.maximumDelay = maximumDelay
    }

    /// The delay before retry number `retry` (0 for the first retry), in seconds.
    public func delay(beforeRetry retry: Int) -> Double {
        let ceiling = min(maximumDelay, baseDelay * Double(1 << min(retry, 30)))
        return Double.random(in: 0...ceiling)
    }

    /// True when a response with this status and error code may succeed when sent again.
    public static func isRetryable(status: Int, errorCode: String) -> Bool {
        if [500, 502, 503, 504, 429].contains(status) { return true }
        return ["RequestTimeout", "InternalError", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeTooSkewed"].contains(errorCode)
    }
}

/// Runs a body that throws only ``CheckpointError`` through an untyped `rethrows` API.
func typedThrows<R>(_ body: () throws -> R) throws(CheckpointError) -> R {
    do {
        return try body()
    } catch let error as CheckpointError {
        throw error
    } catch {
        preconditionFailure("unexpected error \(error)")
    }
}
