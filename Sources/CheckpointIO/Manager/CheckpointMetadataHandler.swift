import BlobCodec

/// Records which checkpoints are complete and where to resume: Caffe2's
/// metadata handler, which the managers call at fixed points.
///
/// - ``setParams(dbPrefix:dbType:nodeNames:pathPrefix:pathType:)`` once per
///   run, before anything else (``JobRunner/train()`` does it first);
/// - ``lastEpoch(userEpoch:)`` to choose the epoch to resume from;
/// - ``write(epoch:metric:)`` after **every node** of an epoch committed its file;
/// - ``cpAccessible(epoch:)`` before a save (`nil`) or to ask about one epoch;
/// - ``report(action:stats:)`` with timings (database path → nanoseconds) of
///   `checkpoint_save`, `checkpoint_load` and `checkpoint_partial_load`;
/// - ``fallBack(fromDamagedEpoch:reason:)`` when the epoch ``lastEpoch(userEpoch:)``
///   chose failed to load because it is damaged.
///
/// ``DurableMetadataHandler`` is the default implementation.
///
/// A handler is a class (the managers share it) and `Sendable` (a
/// background save calls it from another thread), so its state needs a
/// lock; every method throws only `CheckpointError` (typed throws). A
/// minimal conforming handler, which remembers complete epochs in memory
/// and resumes from the last one (``fallBack(fromDamagedEpoch:reason:)``
/// and `write(epoch:)` come from the protocol extension):
///
///     import CheckpointIO
///     import Foundation
///
///     final class LastEpochHandler: CheckpointMetadataHandler, @unchecked Sendable {
///         private let lock = NSLock()
///         private var epochs: [Int] = []  // guarded by `lock`
///
///         func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError) {}
///         func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int? { userEpoch ?? lock.withLock { epochs.last } }
///         func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool { true }
///         func write(epoch: Int, metric: Double?) throws(CheckpointError) { lock.withLock { epochs.append(epoch) } }
///         func report(action: String, stats: [String: UInt64]) {}
///     }
///
///     let manager = try CheckpointManager(dbPrefix: "/ckpt/run3", nodeName: "trainer_0", metadataHandler: LastEpochHandler())
///
/// (`Tests/CheckpointManagerTests/Caffe2ParityTests.swift` compiles and runs this handler.)
public protocol CheckpointMetadataHandler: AnyObject, Sendable {
    /// Where the checkpoints are and which nodes' files make an epoch; called once per run before anything else.
    func setParams(dbPrefix: String, dbType: String, nodeNames: [String], pathPrefix: String?, pathType: String?) throws(CheckpointError)
    /// The epoch to resume from, or nil to start from scratch.
    func lastEpoch(userEpoch: Int?) throws(CheckpointError) -> Int?
    /// Whether checkpoints can be accessed: the store (`epoch` nil) or one epoch's files.
    func cpAccessible(epoch: Int?) throws(CheckpointError) -> Bool
    /// Records that `epoch` is complete on every node; `metric` feeds a keep-best retention rule.
    func write(epoch: Int, metric: Double?) throws(CheckpointError)
    /// Receives timings of one action: database path → nanoseconds.
    func report(action: String, stats: [String: UInt64])
    /// Called when `epoch`'s checkpoint (this handler's resume choice) failed
    /// to load because it is damaged (`reason`): returns the newest older
    /// epoch to resume from instead, and records the damage so that
    /// ``lastEpoch(userEpoch:)`` never chooses `epoch` again and retention
    /// never deletes the returned epoch during this run. Returns nil, and
    /// records nothing, when there is no such epoch.
    func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int?
}

extension CheckpointMetadataHandler {
    /// A handler that cannot record damage: no fallback (``JobRunner`` then
    /// throws the load error).
    public func fallBack(fromDamagedEpoch epoch: Int, reason: String) throws(CheckpointError) -> Int? { nil }

    /// Records that `epoch` is complete on every node (no metric).
    public func write(epoch: Int) throws(CheckpointError) { try write(epoch: epoch, metric: nil) }
}
