import AsyncHTTPClient
import BlobCodec
import CCheckpointKernels
import CheckpointIO
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One S3 request: the operation's name (for errors), the object, the query,
/// extra headers and the body.
struct S3Request {
    var operation: String
    var method: HTTPMethod
    var bucket: String
    var key: String
    var query: [(String, String)] = []
    var headers: [(String, String)] = []
    var body: ByteBuffer?
    /// Hex SHA-256 of the body, or ``S3Signer/unsignedPayload`` for a large body whose
    /// integrity `x-amz-checksum-crc32c` carries.
    var payloadHash: String = S3Signer.emptyPayloadHash
    /// Safe to send again when no response (or a retryable one) came.
    var idempotent = true
}

/// A response: status, headers and (unless it went to a destination buffer) the body.
struct S3Response: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: ByteBuffer
    /// Bytes written to the destination buffer.
    var bodyBytesWritten: Int
    /// With a ``S3Client/BlockChecksums`` request: the CRC32Cs of what went into the destination.
    var pieces: [BlockChecksumAssembler.Piece] = []
    /// Attempts made (more than 1: an earlier one may have taken effect without its response arriving).
    var attempts = 1

    var bodyText: Substring { Substring(body.withUnsafeReadableBytes { String(decoding: $0, as: UTF8.self) }) }
    /// The `<Code>` of an error document (empty for a success, whose body is not parsed).
    var errorCode: String { (200..<300).contains(status) ? "" : S3XML.value("Code", in: bodyText) ?? "" }
    var errorMessage: String { (200..<300).contains(status) ? "" : S3XML.value("Message", in: bodyText) ?? "" }
    var eTag: String? { headers.first(name: "etag") }
}

/// S3 requests over async-http-client (one connection pool, keep-alive), signed
/// with SigV4, retried by ``S3RetryPolicy``. Calls are synchronous: the caller's
/// thread waits on the request's future while NIO's event loops do the work, so
/// a caller must not be an event-loop thread (the storage API is synchronous).
final class S3Client: Sendable {
    let configuration: S3Configuration
    let signer: S3Signer
    let http: HTTPClient

    /// What ``S3Configuration/receiveBuffer`` did to the connections so far (for
    /// the tests; a few counters, so a long job does not grow it).
    struct ReceiveBufferCounts {
        /// Connections whose buffer was set; the kernel refused on `refused` more.
        var set = 0, refused = 0
        /// The smallest and largest `SO_RCVBUF` the kernel reported after setting it.
        var smallest = Int.max, largest = 0
    }
    private let receiveBufferCounts = NIOLockedValueBox(ReceiveBufferCounts())
    var receiveBuffers: ReceiveBufferCounts { receiveBufferCounts.withLockedValue { $0 } }

    /// Responses received so far (every attempt that got one) and their body bytes,
    /// for the tests: what opening or reading a file costs in requests and bytes.
    private let transferCounts = NIOLockedValueBox<(requests: Int, bytesReceived: Int)>((0, 0))
    var transferred: (requests: Int, bytesReceived: Int) { transferCounts.withLockedValue { $0 } }

    /// `CKPT_S3_TRACE=1`: every request's operation, status and duration on stderr.
    let trace = ProcessInfo.processInfo.environment["CKPT_S3_TRACE"] == "1"

    init(configuration: S3Configuration) throws(CheckpointError) {
        try configuration.validate()
        self.configuration = configuration
        self.signer = S3Signer(credentials: configuration.credentials, region: configuration.region)
        var http = HTTPClient.Configuration()
        http.connectionPool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: max(configuration.uploadConcurrency, configuration.downloadConcurrency) + 4)
        http.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(10), read: .milliseconds(Int64(configuration.requestTimeoutInSeconds * 1000)))
        http.decompression = .disabled
        http.redirectConfiguration = .disallow
        if let bytes = configuration.receiveBuffer.bytes(forEndpoint: configuration.endpoint) {
            // The only per-connection hooks async-http-client offers (named for debugging, called
            // for every new HTTP/1.1 or HTTP/2 connection before its first request). The kernel's
            // answer (twice the size asked for after capping it at net.core.rmem_max) is counted
            // for the tests. A tuning knob must not break a transfer: if the kernel refuses, the
            // connection goes on with its automatic sizing.
            let counts = receiveBufferCounts
            let setReceiveBuffer: @Sendable (Channel) -> EventLoopFuture<Void> = { channel in
                channel.setOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(clamping: bytes)).flatMap {
                    S3Client.raiseWindowClamp(channel, to: bytes)
                }.flatMap {
                    channel.getOption(ChannelOptions.socketOption(.so_rcvbuf))
                }.map { value in
                    counts.withLockedValue {
                        $0.set += 1
                        $0.smallest = min($0.smallest, Int(value))
                        $0.largest = max($0.largest, Int(value))
                    }
                }.recover { _ in
                    counts.withLockedValue { $0.refused += 1 }
                }
            }
            http.http1_1ConnectionDebugInitializer = setReceiveBuffer
            http.http2ConnectionDebugInitializer = setReceiveBuffer
        }
        self.http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    deinit {
        try? http.syncShutdown()
    }

    /// Linux: `TCP_WINDOW_CLAMP` of at least `bytes`. A kernel may keep the clamp it set
    /// at the handshake (from the default buffer, ~64 KiB) once the buffer size is
    /// locked by `SO_RCVBUF`; Linux 6.18 raises it as data arrives, older ones may not.
    /// Elsewhere: nothing.
    private static func raiseWindowClamp(_ channel: Channel, to bytes: Int) -> EventLoopFuture<Void> {
        #if os(Linux)
        let clamp = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: 10))  // TCP_WINDOW_CLAMP
        return channel.setOption(clamp, value: SocketOptionValue(clamping: bytes))
        #else
        return channel.eventLoop.makeSucceededVoidFuture()
        #endif
    }

    /// Sends `request`, retrying as the policy says, and returns the first
    /// response that is not retryable (any status: the caller decides), or
    /// throws ``CheckpointError/Code/objectStore(operation:bucket:key:status:errorCode:message:)``
    /// when every attempt failed.
    ///
    /// With `destination`, a 2xx body is written straight into it (it must be exactly
    /// `destination.count` bytes; fewer or more is a failed attempt). Otherwise the
    /// body is collected up to `bodyLimit` bytes.
    func perform(_ request: S3Request, into destination: UnsafeMutableRawBufferPointer? = nil, checksums: BlockChecksums? = nil,
                 bodyLimit: Int = 64 << 20) throws(CheckpointError) -> S3Response {
        var attempt = 0
        while true {
            let failure: (status: Int, code: String, message: String)
            do {
                let started = trace ? Date() : nil
                let response = try sendOnce(request, into: destination, checksums: checksums, bodyLimit: bodyLimit)
                if let started {
                    FileHandle.standardError.write(Data("s3: \(request.operation) \(request.bucket)/\(request.key) -> \(response.status) in \(Int(Date().timeIntervalSince(started) * 1000)) ms\n".utf8))
                }
                if let destination, (200..<300).contains(response.status), response.bodyBytesWritten != destination.count {
                    failure = (response.status, "IncompleteBody", "got \(response.bodyBytesWritten) of \(destination.count) bytes")
                } else if response.status >= 300, S3RetryPolicy.isRetryable(status: response.status, errorCode: response.errorCode) {
                    failure = (response.status, response.errorCode, response.errorMessage)
                } else {
                    var response = response
                    response.attempts = attempt + 1
                    return response
                }
            } catch {
                failure = (0, "", String(describing: error))
            }
            attempt += 1
            guard request.idempotent, attempt < configuration.retry.maximumAttempts else {
                let suffix = attempt > 1 ? " (after \(attempt) attempts)" : ""
                throw CheckpointError(.objectStore(operation: request.operation, bucket: request.bucket, key: request.key,
                                                   status: failure.status, errorCode: failure.code, message: failure.message + suffix))
            }
            Thread.sleep(forTimeInterval: configuration.retry.delay(beforeRetry: attempt - 1))
        }
    }

    /// Sends and throws unless the status is in `accepted` (default 2xx).
    @discardableResult
    func send(_ request: S3Request, accepting accepted: Set<Int>? = nil, into destination: UnsafeMutableRawBufferPointer? = nil,
              checksums: BlockChecksums? = nil, bodyLimit: Int = 64 << 20) throws(CheckpointError) -> S3Response {
        let response = try perform(request, into: destination, checksums: checksums, bodyLimit: bodyLimit)
        let ok = accepted.map { $0.contains(response.status) } ?? (200..<300).contains(response.status)
        guard ok else { throw error(request, response) }
        return response
    }

    /// The error of a response that was not the one wanted.
    func error(_ request: S3Request, _ response: S3Response) -> CheckpointError {
        CheckpointError(.objectStore(operation: request.operation, bucket: request.bucket, key: request.key, status: response.status,
                                     errorCode: response.errorCode, message: response.errorMessage))
    }

    /// The URL and the signed headers of `request` at `date` (`host` not among them: the HTTP client sends it).
    func prepare(_ request: S3Request, date: Date) -> (url: String, headers: [(String, String)]) {
        let (base, host, pathPrefix) = configuration.location(bucket: request.bucket)
        var path = request.key.isEmpty ? pathPrefix : pathPrefix + "/" + S3Signer.encodePath(request.key)
        if path.isEmpty { path = "/" }
        let queryString = S3Signer.canonicalQuery(request.query)
        let signed = signer.sign(method: request.method.rawValue, path: path, query: request.query, headers: request.headers + [("host", host)],
                                 payloadHash: request.payloadHash, date: date)
        return (base + path + (queryString.isEmpty ? "" : "?" + queryString), signed.filter { $0.0 != "host" })
    }

    /// Checksum the bytes a response writes into its destination, in blocks of
    /// `blockSize` counted from `origin` bytes before the destination's start.
    struct BlockChecksums {
        var blockSize: Int
        var origin: Int
    }

    private func sendOnce(_ request: S3Request, into destination: UnsafeMutableRawBufferPointer?, checksums: BlockChecksums?, bodyLimit: Int) throws -> S3Response {
        let (url, headers) = prepare(request, date: Date())
        var httpRequest = try HTTPClient.Request(url: url, method: request.method)
        for (name, value) in headers { httpRequest.headers.add(name: name, value: value) }
        if let body = request.body {
            httpRequest.body = .byteBuffer(body)
        } else if request.method == .PUT || request.method == .POST {
            httpRequest.body = .byteBuffer(ByteBuffer())
        }
        let collector = S3ResponseCollector(destination: destination, checksums: checksums, bodyLimit: bodyLimit)
        let deadline = NIODeadline.now() + .milliseconds(Int64(configuration.requestTimeoutInSeconds * 1000))
        let response = try http.execute(request: httpRequest, delegate: collector, deadline: deadline).wait()
        transferCounts.withLockedValue {
            $0.requests += 1
            $0.bytesReceived += response.bodyBytesWritten + response.body.readableBytes
        }
        return response
    }
}

/// Collects a response: a 2xx body into the destination buffer (when given,
/// checksummed piece by piece as it is copied when asked), anything else into
/// a ByteBuffer up to a limit. Called on one event loop, in order.
final class S3ResponseCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = S3Response
    private let destination: UnsafeMutableRawBufferPointer?
    private let checksums: S3Client.BlockChecksums?
    private let bodyLimit: Int
    private var status = 0
    private var headers = HTTPHeaders()
    private var body = ByteBuffer()
    private var written = 0
    /// The pieces so far; the last one grows while its block continues.
    private var pieces: [BlockChecksumAssembler.Piece] = []

    struct BodyTooLarge: Error {}

    init(destination: UnsafeMutableRawBufferPointer?, checksums: S3Client.BlockChecksums?, bodyLimit: Int) {
        self.destination = destination
        self.checksums = checksums
        self.bodyLimit = bodyLimit
    }

    func didReceiveHead(task: HTTPClient.Task<S3Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status = Int(head.status.code)
        headers = head.headers
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<S3Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        if let destination, (200..<300).contains(status) {
            let count = buffer.readableBytes
            guard written + count <= destination.count else {
                return task.eventLoop.makeFailedFuture(BodyTooLarge())
            }
            buffer.withUnsafeReadableBytes { bytes in
                if let checksums, count > 0 {
                    // A checksummed read fills the caller's tensor, which this load does not read
                    // again (the CRC32C reads the response's bytes, still in cache): streaming
                    // stores. Other reads (a compressed payload, a header, a download
                    // to a file) are read next, so their bytes stay in cache.
                    ckk_copy_streaming(destination.baseAddress! + written, bytes.baseAddress!, count)
                    BlockChecksumAssembler.append(bytes, at: checksums.origin + written, blockSize: checksums.blockSize, to: &pieces)
                } else {
                    UnsafeMutableRawBufferPointer(rebasing: destination[written..<(written + count)]).copyMemory(from: bytes)
                }
            }
            written += count
        } else {
            // A success body is bounded by the caller's limit; an error document by 1 MiB.
            let limit = (200..<300).contains(status) ? bodyLimit : max(bodyLimit, 1 << 20)
            guard body.readableBytes + buffer.readableBytes <= limit else { return task.eventLoop.makeFailedFuture(BodyTooLarge()) }
            var buffer = buffer
            body.writeBuffer(&buffer)
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<S3Response>) throws -> S3Response {
        S3Response(status: status, headers: headers, body: body, bodyBytesWritten: written, pieces: pieces)
    }
}

extension ByteBuffer {
    /// The readable bytes as an array, copied in one go.
    var bytes: [UInt8] { withUnsafeReadableBytes { Array($0) } }
}
