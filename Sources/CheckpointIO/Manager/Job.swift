import BlobCodec

/// A training job as ``JobRunner`` runs it: Caffe2's `Job`, with steps as
/// closures over each node's ``Workspace``.
///
///     let job = Job()
///     job.addInitStep(node: "trainer_0") { ws in ws["total"] = Tensor(scalar: Int64(100)) }
///     job.addEpochStep(node: "trainer_0") { ws in try train(ws) }
///     job.addStopCondition(node: "trainer_0") { ws in try isExhausted(ws) }
///     epochLimiter(job, numEpochs: 10, node: "trainer_0")
///
/// Groups run in this order: init (only when starting from scratch), then
/// per epoch the epoch steps and the stop conditions, then download and exit
/// once at the end. Within a group, steps run in the order they were added.
public final class Job: @unchecked Sendable {
    /// A step: reads and writes blobs of one node's workspace.
    public typealias Step = (Workspace) throws -> Void
    /// A stop condition: true when the job should stop after this epoch.
    public typealias StopCondition = (Workspace) throws -> Bool

    /// The node of steps added without one.
    public static let defaultNode = "local"

    struct NodeStep {
        var node: String
        var run: Step
    }

    private(set) var initSteps: [NodeStep] = []
    private(set) var epochSteps: [NodeStep] = []
    private(set) var downloadSteps: [NodeStep] = []
    private(set) var exitSteps: [NodeStep] = []
    private(set) var stopConditions: [(node: String, condition: StopCondition)] = []
    private(set) var metric: (node: String, compute: (Workspace) throws -> Double)?
    private var explicitNodesToCheckpoint: [String]?

    /// A job with no steps; `nodesToCheckpoint` overrides the default (the nodes of the init steps).
    public init(nodesToCheckpoint: [String]? = nil) {
        self.explicitNodesToCheckpoint = nodesToCheckpoint
    }

    /// Adds a step run once on `node` before the first epoch of a fresh run (not on a resume).
    public func addInitStep(node: String = Job.defaultNode, _ step: @escaping Step) { initSteps.append(NodeStep(node: node, run: step)) }
    /// Adds a step run on `node` at every epoch.
    public func addEpochStep(node: String = Job.defaultNode, _ step: @escaping Step) { epochSteps.append(NodeStep(node: node, run: step)) }
    /// Adds a step run on `node` after the last epoch, before the exit steps.
    public func addDownloadStep(node: String = Job.defaultNode, _ step: @escaping Step) { downloadSteps.append(NodeStep(node: node, run: step)) }
    /// Adds a step run on `node` when the job ends.
    public func addExitStep(node: String = Job.defaultNode, _ step: @escaping Step) { exitSteps.append(NodeStep(node: node, run: step)) }
    /// Adds a condition evaluated after every epoch; the job stops when any holds.
    public func addStopCondition(node: String = Job.defaultNode, _ condition: @escaping StopCondition) { stopConditions.append((node, condition)) }
    /// Sets the metric computed after every epoch and recorded with its
    /// checkpoint (for ``RetentionPolicy/keepBest``).
    public func setMetric(node: String = Job.defaultNode, _ compute: @escaping (Workspace) throws -> Double) { metric = (node, compute) }

    /// The nodes whose workspaces are checkpointed: as given to ``init(nodesToCheckpoint:)``,
    /// else the nodes of the init steps in order of first use (Caffe2's
    /// `init_group.used_nodes()`), else all nodes.
    public var nodesToCheckpoint: [String] {
        if let explicitNodesToCheckpoint { return explicitNodesToCheckpoint }
        let fromInit = Job.uniqueNodes(initSteps.map(\.node))
        return fromInit.isEmpty ? nodes : fromInit
    }

    /// Every node any step or condition uses, in order of first use.
    public var nodes: [String] {
        Job.uniqueNodes(initSteps.map(\.node) + epochSteps.map(\.node) + stopConditions.map(\.node) + downloadSteps.map(\.node) + exitSteps.map(\.node))
    }

    private static func uniqueNodes(_ nodes: [String]) -> [String] {
        var seen = Set<String>()
        return nodes.filter { seen.insert($0).inserted }
    }
}

/// Makes `job` stop after exactly `numEpochs` epochs (Caffe2's `epoch_limiter`).
///
/// The init step creates the counter blob ``epochLimiterCounterBlob`` (an
/// Int64 holding `numEpochs - 1`, with a Bool `COUNTER:finished`), so it is
/// checkpointed and a resumed job stops at the same epoch; each epoch counts it down, and the stop
/// condition holds once it was already zero.
///
/// - Precondition: `numEpochs` ≥ 1.
public func epochLimiter(_ job: Job, numEpochs: Int, node: String = Job.defaultNode) {
    precondition(numEpochs >= 1, "epochLimiter needs at least one epoch")
    let counter = epochLimiterCounterBlob, finished = epochLimiterCounterBlob + ":finished"
    job.addInitStep(node: node) { workspace in
        workspace[counter] = Tensor(scalar: Int64(numEpochs - 1))
        // Created here, not first in an epoch, so that it is on the blob list (not a blob added after initialize()).
        workspace[finished] = Tensor(scalar: false)
    }
    job.addEpochStep(node: node) { workspace in
        let done = try workspace.update(counter) { tensor -> Bool in
            let count = try tensor.scalars(as: Int64.self).first ?? 0
            guard count > 0 else { return true }
            tensor.withUnsafeMutableBytes { $0.storeBytes(of: count - 1, as: Int64.self) }
            return false
        }
        workspace[finished] = Tensor(scalar: done)
    }
    job.addStopCondition(node: node) { workspace in
        try workspace.fetchBlob(finished).scalars(as: Bool.self).first ?? false
    }
}

/// The blob name of ``epochLimiter(_:numEpochs:node:)``'s counter.
public let epochLimiterCounterBlob = "epoch_limiter:counter"
