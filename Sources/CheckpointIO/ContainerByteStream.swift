import BlobCodec

/// Where a ``ContainerWriter`` sends a new file's bytes instead of a local
/// temporary: an object store's multipart upload, for example.
///
/// The writer calls ``append(_:at:)`` from one thread at a time, with offsets
/// that start at 0 and always continue where the previous call ended (the
/// writer produces a file front to back when it writes to a sink). The
/// segments are valid only during the call: a sink that keeps bytes copies
/// them. A sink may block in ``append(_:at:)`` to bound its memory.
///
/// Exactly one of ``commit()`` (make the whole file visible at once) and
/// ``abort()`` (leave nothing) ends a sink's life.
public protocol ContainerByteSink: AnyObject {
    /// Appends the concatenation of `segments`, which starts at byte `offset` of the file.
    func append(_ segments: [UnsafeRawBufferPointer], at offset: Int) throws(CheckpointError)
    /// Makes the complete file visible under its final name, atomically.
    func commit() throws(CheckpointError)
    /// Abandons the file: nothing becomes visible and nothing is left behind. Idempotent.
    func abort()
}

/// Random access to the bytes of a file that is not a local file (an object
/// in an object store), for ``ContainerReader/open(source:options:)``.
///
/// ``read(into:at:)`` may be called from several threads at once; it reads
/// exactly `buffer.count` bytes or throws.
public protocol ContainerByteSource: AnyObject, Sendable {
    /// A name for errors (an `s3://bucket/key` URL).
    var name: String { get }
    /// The file's size in bytes.
    var sizeInBytes: Int { get }
    /// Reads exactly `buffer.count` bytes at `offset` into `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointError)
}
