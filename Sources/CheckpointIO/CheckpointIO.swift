// CheckpointIO: container files on top of BlobCodec (append-only writer, mmap
// reader, atomic commit, recovery). The container is the next issue's work;
// for now this module re-exports BlobCodec so that `import CheckpointIO` is
// the one import a user needs.
@_exported import BlobCodec
// `Logger` (and `Logger.Level`) for JobRunner's and CheckpointOptions' `logger:`, without a direct swift-log dependency.
@_exported import struct Logging.Logger
