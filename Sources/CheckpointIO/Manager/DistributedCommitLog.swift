import BlobCodec

/// The records of the distributed two-phase commit (FORMAT.md §6.4), in
/// `dbPrefix/distributed/`: their names, their JSON, and a listing of them.
/// Everything goes through ``CheckpointStorage``.
struct DistributedCommitLog {
    /// The directory of the records inside `dbPrefix`.
    static let directoryName = "distributed"
    static let nodeRecordFormat = "checkpoint-dist-node"
    static let completionRecordFormat = "checkpoint-dist-complete"
    static let recordSuffix = ".committed"
    static let completionSuffix = ".complete"
    static let maximumRecordSize = 1 << 20

    /// Phase 1: one node's file of one epoch is committed, in one run.
    struct NodeRecord: Equatable {
        var epoch: Int
        var runID: String
        var node: String
        /// The job's full node list as the writer knew it.
        var nodes: [String]
        var metric: Double?
        var resumedFrom: Int?
    }

    /// Phase 2: every node of `nodes` committed its file of `epoch` in run `runID`.
    struct CompletionRecord: Equatable {
        var epoch: Int
        var runID: String
        var nodes: [String]
        var metric: Double?
        var resumedFrom: Int?
        var completedBy: String
    }

    /// What one listing of the directory shows.
    struct Listing {
        /// Epochs with a completion record.
        var completed: Set<Int> = []
        /// Node records: epoch → run → nodes.
        var records: [Int: [String: Set<String>]] = [:]
        /// Every record name per epoch (node records, for removal).
        var recordNames: [Int: [String]] = [:]

        /// The run of `epoch` whose records cover `nodes`, if one does.
        func completeRun(epoch: Int, nodes: Set<String>) -> String? {
            records[epoch]?.first { nodes.isSubset(of: $0.value) }?.key
        }
    }

    let storage: any CheckpointStorage
    let dbPrefix: String
    let durability: Durability

    var directory: String { CheckpointNaming.join(dbPrefix, DistributedCommitLog.directoryName) }

    static func recordName(node: String, epoch: Int, runID: String) -> String { "\(node).\(epoch).\(runID)\(recordSuffix)" }
    static func completionName(epoch: Int) -> String { "\(epoch)\(completionSuffix)" }
    func path(_ name: String) -> String { CheckpointNaming.join(directory, name) }

    /// Run ids: 1…64 characters of `A-Z a-z 0-9 _ -` (no dot: record names are parsed from the right).
    static func validate(runID: String) throws(CheckpointError) {
        let allowed = runID.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F || byte == 0x2D
        }
        guard !runID.isEmpty, runID.utf8.count <= 64, allowed else {
            throw CheckpointError(.invalidField(field: "runID", reason: "'\(runID.prefix(80))' must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"))
        }
    }

    /// A canonical decimal epoch ("7", not "07" or "+7").
    static func parseEpoch(_ digits: Substring) -> Int? {
        guard let epoch = Int(digits), epoch >= 0, String(epoch) == digits else { return nil }
        return epoch
    }

    /// Lists the directory; names that are not records (temporaries, foreign files) are ignored.
    func list() -> Listing {
        var listing = Listing()
        for name in storage.listFiles(in: directory) where !name.hasPrefix(".") {
            if name.hasSuffix(DistributedCommitLog.completionSuffix) {
                if let epoch = DistributedCommitLog.parseEpoch(name.dropLast(DistributedCommitLog.completionSuffix.count)) {
                    listing.completed.insert(epoch)
                }
            } else if name.hasSuffix(DistributedCommitLog.recordSuffix) {
                // NODE "." EPOCH "." RUN ".committed", parsed from the right (NODE may hold dots).
                let base = name.dropLast(DistributedCommitLog.recordSuffix.count)
                guard let runDot = base.lastIndex(of: ".") else { continue }
                let run = String(base[base.index(after: runDot)...])
                let rest = base[..<runDot]
                guard let epochDot = rest.lastIndex(of: "."), (try? DistributedCommitLog.validate(runID: run)) != nil,
                      let epoch = DistributedCommitLog.parseEpoch(rest[rest.index(after: epochDot)...]) else { continue }
                let node = String(rest[..<epochDot])
                guard (try? CheckpointNaming.validate(nodeName: node)) != nil else { continue }
                listing.records[epoch, default: [:]][run, default: []].insert(node)
                listing.recordNames[epoch, default: []].append(name)
            }
        }
        return listing
    }

    // MARK: Writing

    /// Publishes `record` (create-if-absent); true when this call created it.
    @discardableResult
    func publish(_ record: NodeRecord) throws(CheckpointError) -> Bool {
        let name = DistributedCommitLog.recordName(node: record.node, epoch: record.epoch, runID: record.runID)
        let document = JSONValue.object([
            ("format", .string(DistributedCommitLog.nodeRecordFormat)),
            ("version", .integer(1)),
            ("epoch", .integer(record.epoch)),
            ("run", .string(record.runID)),
            ("node", .string(record.node)),
            ("file", .string(record.node + "." + String(record.epoch))),
            ("nodes", .array(record.nodes.map { .string($0) })),
            ("metric", record.metric.map { JSONValue.double($0) } ?? .null),
            ("resumed_from", record.resumedFrom.map { JSONValue.integer($0) } ?? .null),
        ])
        return try storage.createFileIfAbsent(document.serialized() + [0x0A], at: path(name), durability: durability)
    }

    /// Creates `record`'s completion record unless one exists; true when this call created it.
    func complete(_ record: CompletionRecord) throws(CheckpointError) -> Bool {
        let document = JSONValue.object([
            ("format", .string(DistributedCommitLog.completionRecordFormat)),
            ("version", .integer(1)),
            ("epoch", .integer(record.epoch)),
            ("run", .string(record.runID)),
            ("nodes", .array(record.nodes.map { .string($0) })),
            ("files", .array(record.nodes.map { .string($0 + "." + String(record.epoch)) })),
            ("metric", record.metric.map { JSONValue.double($0) } ?? .null),
            ("resumed_from", record.resumedFrom.map { JSONValue.integer($0) } ?? .null),
            ("completed_by", .string(record.completedBy)),
        ])
        return try storage.createFileIfAbsent(document.serialized() + [0x0A], at: path(DistributedCommitLog.completionName(epoch: record.epoch)),
                                              durability: durability)
    }

    /// Removes a record (a missing one is not an error).
    func remove(_ name: String) throws(CheckpointError) {
        try storage.removeCheckpoint(name, in: directory)
    }

    // MARK: Reading

    /// `epoch`'s completion record; nil when there is none.
    ///
    /// - Throws: when it cannot be read, or is not a valid record (naming the file).
    func completion(epoch: Int) throws(CheckpointError) -> CompletionRecord? {
        let path = path(DistributedCommitLog.completionName(epoch: epoch))
        guard let bytes = try storage.readFile(path, limit: DistributedCommitLog.maximumRecordSize) else { return nil }
        func invalid(_ reason: String) -> CheckpointError { CheckpointError(.invalidField(field: "completion record", reason: reason), path: path) }
        let value = try JSONValue.parse(bytes, what: "completion record")
        guard value["format"]?.stringValue == DistributedCommitLog.completionRecordFormat else { throw invalid("'format' is not \"\(DistributedCommitLog.completionRecordFormat)\"") }
        guard value["version"]?.nonNegativeIntValue == 1 else { throw invalid("unsupported 'version' (this reader knows 1)") }
        guard value["epoch"]?.nonNegativeIntValue == epoch else { throw invalid("'epoch' is not \(epoch)") }
        guard let run = value["run"]?.stringValue, (try? DistributedCommitLog.validate(runID: run)) != nil else { throw invalid("'run' is not a valid run id") }
        guard let items = value["nodes"]?.arrayValue, !items.isEmpty else { throw invalid("'nodes' is not a non-empty array") }
        var nodes: [String] = []
        for item in items {
            guard let node = item.stringValue, (try? CheckpointNaming.validate(nodeName: node)) != nil else { throw invalid("a node name is not valid") }
            nodes.append(node)
        }
        guard Set(nodes).count == nodes.count else { throw invalid("a node is listed twice") }
        var resumedFrom: Int?
        if let member = value["resumed_from"], member != .null {
            guard let epoch = member.nonNegativeIntValue else { throw invalid("'resumed_from' is not an epoch") }
            resumedFrom = epoch
        }
        return CompletionRecord(epoch: epoch, runID: run, nodes: nodes, metric: value["metric"]?.doubleValue,
                                resumedFrom: resumedFrom, completedBy: value["completed_by"]?.stringValue ?? "")
    }

    /// A node record; nil when it does not exist or is not valid (it then counts as absent).
    func nodeRecord(node: String, epoch: Int, runID: String) -> NodeRecord? {
        let path = path(DistributedCommitLog.recordName(node: node, epoch: epoch, runID: runID))
        guard let bytes = try? storage.readFile(path, limit: DistributedCommitLog.maximumRecordSize),
              let value = try? JSONValue.parse(bytes, what: "node record"),
              value["format"]?.stringValue == DistributedCommitLog.nodeRecordFormat, value["version"]?.nonNegativeIntValue == 1,
              value["epoch"]?.nonNegativeIntValue == epoch, value["run"]?.stringValue == runID, value["node"]?.stringValue == node,
              let items = value["nodes"]?.arrayValue else { return nil }
        let nodes = items.compactMap(\.stringValue)
        guard nodes.count == items.count, !nodes.isEmpty, nodes.allSatisfy({ (try? CheckpointNaming.validate(nodeName: $0)) != nil }) else { return nil }
        let resumed = value["resumed_from"]?.nonNegativeIntValue
        return NodeRecord(epoch: epoch, runID: runID, node: node, nodes: nodes, metric: value["metric"]?.doubleValue, resumedFrom: resumed)
    }
}
