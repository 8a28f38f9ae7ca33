import BlobCodec

/// Incremental saves (see ``IncrementalOptions``): which blobs become references, and what a save or load leaves behind.
extension CheckpointManager {
    /// The plan of an incremental save of `snapshot` as `path` (nil when saves
    /// are full: no option, or a format without references); adds the files it
    /// refers to and its count since the last full save to `metadata`.
    func incrementalPlan(_ snapshot: [(name: String, tensor: Tensor)], path: String,
                         metadata: inout [String: String]) -> (references: [BlobReference?], savesSinceFull: Int)? {
        guard let settings = options.incremental, format == .container else { return nil }
        let plan = incremental.plan(snapshot, fileName: ContainerWriter.splitPath(path).base, options: settings)
        metadata[CheckpointManager.referencesKey] = JSONValue.array(plan.files.map { .string($0) }).text
        metadata[CheckpointManager.savesSinceFullKey] = String(plan.savesSinceFull)
        return (plan.references, plan.savesSinceFull)
    }

    /// After `path` was committed: remembers where each blob of `snapshot` now
    /// lies. On failure (the file cannot be reopened) the next save is full.
    func recordIncremental(_ snapshot: [(name: String, tensor: Tensor)], path: String, storage: any CheckpointStorage, savesSinceFull: Int) {
        do throws(CheckpointError) {
            guard let reader = try storage.openCheckpoint(path, format: format) as? ContainerReader else {
                incremental.reset()
                return
            }
            try incremental.record(snapshot, in: reader, savesSinceFull: savesSinceFull)
        } catch {
            incremental.reset()
            options.logger.warning("Incremental saves: cannot reopen \(path) after saving it (\(error)); the next save of node '\(nodeName)' is full.")
        }
    }

    /// After a load: the loaded tensors lie in `reader`'s file (or its
    /// references' targets), so the next save may refer to them.
    func recordLoaded(_ tensors: [(name: String, tensor: Tensor)], reader: any CheckpointFileReading) {
        guard options.incremental != nil, let reader = reader as? ContainerReader else { return }
        // A file written by a full manager counts as full.
        let count = reader.metadata[CheckpointManager.savesSinceFullKey].flatMap { Int($0) }.map { max(0, $0) } ?? 0
        do throws(CheckpointError) { try incremental.record(tensors, in: reader, savesSinceFull: count) } catch {
            incremental.reset()
        }
    }
}
