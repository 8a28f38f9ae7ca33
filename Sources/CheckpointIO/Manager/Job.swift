import BlobCodec

/// A group of steps that run together, each on one node's ``Workspace``:
/// Caffe2's `TaskGroup` (`job.init_group`, `job.epoch_group`, …).
///
///     let initGroup = TaskGroup()
///     initGroup.addStep(node: "trainer_0") { ws in ws["w"] = try Tensor([Float](repeating: 0, count: 4)) }
///     let job = Job(initGroup: initGroup, epochGroup: TaskGroup())
///
/// A step added without a node runs on the node its ``Job`` defaults to
/// (`defaultNode`). Steps run in the order they were added.
public final class TaskGroup: @unchecked Sendable {
    private let lock = PThreadLock()
    private var entries: [(node: String?, run: Job.Step)] = []

    /// An empty group.
    public init() {}

    /// Adds a step on `node` (nil: the job's default node).
    public func addStep(node: String? = nil, _ step: @escaping Job.Step) {
        lock.locked { entries.append((node, step)) }
    }

    /// The steps in order, each with its node as given (nil: the job's default node).
    var steps: [(node: String?, run: Job.Step)] { lock.locked { entries } }
}

/// A training job as ``JobRunner`` runs it: Caffe2's `Job`, with steps as
/// closures over each node's ``Workspace``.
///
///     let job = Job(defaultNode: "trainer_0")
///     job.addInitStep { ws in ws["total"] = Tensor(scalar: Int64(100)) }
///     job.addEpochStep { ws in try train(ws) }
///     job.addStopCondition { ws in try isExhausted(ws) }
///     epochLimiter(job, numEpochs: 10)
///
/// Groups run in this order: init (only when starting from scratch), then
/// per epoch the epoch steps and the stop conditions, then download and exit
/// once at the end. Within a group, steps run in the order they were added.
///
/// A step, stop condition or ``epochLimiter(_:numEpochs:node:)`` given no
/// `node` runs on the job's `defaultNode`: a single-node job names its node
/// once, in ``init(defaultNode:nodesToCheckpoint:)``, and cannot spread over
/// two nodes by forgetting `node:` in one call.
///
/// Caffe2's constructor shape is ``init(initGroup:epochGroup:downloadGroup:exitGroup:stopConditions:nodesToCheckpoint:defaultNode:)``,
/// and ``initGroup``, ``epochGroup``, ``downloadGroup`` and ``exitGroup``
/// are its `init_group`, `epoch_group`, `download_group` and `exit_group`.
public final class Job: @unchecked Sendable {
    /// A step: reads and writes blobs of one node's workspace.
    public typealias Step = (Workspace) throws -> Void
    /// A stop condition: true when the job should stop after this epoch.
    public typealias StopCondition = (Workspace) throws -> Bool

    /// The default node of a job created without one.
    public static let defaultNode = "local"

    struct NodeStep {
        var node: String
        var run: Step
    }

    /// The node of steps and conditions added without one.
    public let defaultNode: String
    /// Runs once, when the job starts from scratch (Caffe2's `init_group`).
    public let initGroup: TaskGroup
    /// Runs every epoch (Caffe2's `epoch_group`).
    public let epochGroup: TaskGroup
    /// Runs once after the last epoch (Caffe2's `download_group`).
    public let downloadGroup: TaskGroup
    /// Runs once at the very end (Caffe2's `exit_group`).
    public let exitGroup: TaskGroup

    private let lock = PThreadLock()
    private var conditions: [(node: String?, condition: StopCondition)] = []
    private var metricEntry: (node: String?, compute: (Workspace) throws -> Double)?
    private var explicitNodesToCheckpoint: [String]?
    private var limiterCount = 0

    /// A job with no steps whose steps default to `defaultNode`;
    /// `nodesToCheckpoint` overrides the default (the nodes of the init steps).
    public init(defaultNode: String = Job.defaultNode, nodesToCheckpoint: [String]? = nil) {
        self.defaultNode = defaultNode
        self.explicitNodesToCheckpoint = nodesToCheckpoint
        self.initGroup = TaskGroup()
        self.epochGroup = TaskGroup()
        self.downloadGroup = TaskGroup()
        self.exitGroup = TaskGroup()
    }

    /// A job made of groups built beforehand, as Caffe2's
    /// `Job(init_group=…, epoch_group=…, download_group=…, exit_group=…, stop_conditions=…, nodes_to_checkpoint=…)`.
    ///
    /// - Parameters:
    ///   - initGroup: steps run once before the first epoch of a fresh run.
    ///   - epochGroup: steps run at every epoch.
    ///   - downloadGroup: steps run after the last epoch, before the exit steps.
    ///   - exitGroup: steps run when the job ends.
    ///   - stopConditions: each with its node (nil: `defaultNode`); the job
    ///     stops after an epoch at whose end any holds.
    ///   - nodesToCheckpoint: the nodes whose workspaces are checkpointed
    ///     (nil: every node a step or condition names).
    ///   - defaultNode: the node of steps and conditions given none.
    public init(initGroup: TaskGroup = TaskGroup(), epochGroup: TaskGroup = TaskGroup(), downloadGroup: TaskGroup = TaskGroup(),
                exitGroup: TaskGroup = TaskGroup(), stopConditions: [(node: String?, condition: StopCondition)] = [],
                nodesToCheckpoint: [String]? = nil, defaultNode: String = Job.defaultNode) {
        self.defaultNode = defaultNode
        self.explicitNodesToCheckpoint = nodesToCheckpoint
        self.initGroup = initGroup
        self.epochGroup = epochGroup
        self.downloadGroup = downloadGroup
        self.exitGroup = exitGroup
        self.conditions = stopConditions
    }

    /// Adds a step run once on `node` (nil: `defaultNode`) before the first epoch of a fresh run (not on a resume).
    public func addInitStep(node: String? = nil, _ step: @escaping Step) { initGroup.addStep(node: node, step) }
    /// Adds a step run on `node` (nil: `defaultNode`) at every epoch.
    public func addEpochStep(node: String? = nil, _ step: @escaping Step) { epochGroup.addStep(node: node, step) }
    /// Adds a step run on `node` (nil: `defaultNode`) after the last epoch, before the exit steps.
    public func addDownloadStep(node: String? = nil, _ step: @escaping Step) { downloadGroup.addStep(node: node, step) }
    /// Adds a step run on `node` (nil: `defaultNode`) when the job ends.
    public func addExitStep(node: String? = nil, _ step: @escaping Step) { exitGroup.addStep(node: node, step) }
    /// Adds a condition evaluated after every epoch; the job stops when any holds.
    public func addStopCondition(node: String? = nil, _ condition: @escaping StopCondition) { lock.locked { conditions.append((node, condition)) } }
    /// Sets the metric computed after every epoch and recorded with its
    /// checkpoint (for ``RetentionPolicy/keepBest``).
    public func setMetric(node: String? = nil, _ compute: @escaping (Workspace) throws -> Double) { lock.locked { metricEntry = (node, compute) } }

    private func resolved(_ group: TaskGroup) -> [NodeStep] { group.steps.map { NodeStep(node: $0.node ?? defaultNode, run: $0.run) } }
    var initSteps: [NodeStep] { resolved(initGroup) }
    var epochSteps: [NodeStep] { resolved(epochGroup) }
    var downloadSteps: [NodeStep] { resolved(downloadGroup) }
    var exitSteps: [NodeStep] { resolved(exitGroup) }
    var stopConditions: [(node: String, condition: StopCondition)] { lock.locked { conditions.map { ($0.node ?? defaultNode, $0.condition) } } }
    var metric: (node: String, compute: (Workspace) throws -> Double)? { lock.locked { metricEntry.map { ($0.node ?? defaultNode, $0.compute) } } }

    /// A fresh counter blob name for the next ``epochLimiter(_:numEpochs:node:)``
    /// of this job: ``epochLimiterCounterBlob`` for the first, then
    /// `epoch_limiter_1:counter`, `epoch_limiter_2:counter`, … (stable across
    /// runs, so a resumed job finds its counters in the checkpoint).
    func nextEpochLimiterCounter() -> String {
        lock.locked {
            defer { limiterCount += 1 }
            return limiterCount == 0 ? epochLimiterCounterBlob : "epoch_limiter_\(limiterCount):counter"
        }
    }

    /// The nodes whose workspaces are checkpointed: as given to the initializer,
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
/// Each call gets its own counter, as in Caffe2: the first call's blob is
/// ``epochLimiterCounterBlob``, later calls on the same job use
/// `epoch_limiter_1:counter`, `epoch_limiter_2:counter`, … The init step
/// creates the counter (an Int64 holding `numEpochs - 1`, with a Bool
/// `COUNTER:finished`), so it is checkpointed and a resumed job stops at the
/// same epoch; each epoch counts it down, and the stop condition holds once
/// it was already zero. With several limiters the job stops when the first
/// of them says so (two limiters of 5 and 3 epochs: after 3).
///
/// - Parameters:
///   - job: the job to limit.
///   - numEpochs: the epochs to run before this limiter stops the job.
///   - node: the node of the counter (nil: the job's `defaultNode`).
/// - Precondition: `numEpochs` ≥ 1.
public func epochLimiter(_ job: Job, numEpochs: Int, node: String? = nil) {
    precondition(numEpochs >= 1, "epochLimiter needs at least one epoch")
    let counter = job.nextEpochLimiterCounter(), finished = counter + ":finished"
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

/// The blob name of the first ``epochLimiter(_:numEpochs:node:)`` counter of a job.
public let epochLimiterCounterBlob = "epoch_limiter:counter"
