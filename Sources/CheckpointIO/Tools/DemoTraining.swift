import BlobCodec

/// The small, deterministic training job behind `ckpt demo`: a few fp32
/// weight matrices and their momentum buffers updated by SGD with momentum
/// on seeded pseudo-gradients, a step counter, and a vocabulary. The same
/// epoch gives the same bytes in every process, so a checkpoint written by
/// one process (even one that was later killed) can be checked bit for bit
/// by another.
public struct DemoTraining: Sendable {
    /// Layers of the model.
    public var layers: Int
    /// Width of each layer.
    public var hidden: Int
    /// Epochs to train.
    public var epochs: Int
    /// The one node of the demo job.
    public let node = "trainer_0"

    /// A model of `layers` × `hidden` weights trained for `epochs` epochs.
    public init(layers: Int = 4, hidden: Int = 1024, epochs: Int = 8) {
        self.layers = layers
        self.hidden = hidden
        self.epochs = epochs
    }

    /// Bytes of one checkpoint's tensors.
    public var checkpointBytes: Int { layers * hidden * hidden * 4 * 2 + 8 + 64 }

    /// The job: init creates the blobs, each epoch takes one SGD step per
    /// layer, and ``epochLimiter(_:numEpochs:node:)`` stops it after ``epochs``.
    public func makeJob() -> Job {
        let job = Job()
        let configuration = self
        job.addInitStep(node: node) { workspace in
            for (name, tensor) in try configuration.initialBlobs() { workspace[name] = tensor }
        }
        job.addEpochStep(node: node) { workspace in
            let step = try workspace.fetchBlob("optimizer.step").scalars(as: Int64.self)[0] + 1
            for layer in 0..<configuration.layers {
                var weights = try workspace.fetchBlob("layers.\(layer).weight").scalars(as: Float.self)
                var momentum = try workspace.fetchBlob("layers.\(layer).momentum").scalars(as: Float.self)
                configuration.sgdStep(layer: layer, step: Int(step), weights: &weights, momentum: &momentum)
                let shape: Shape = [configuration.hidden, configuration.hidden]
                workspace["layers.\(layer).weight"] = try Tensor(weights, shape: shape)
                workspace["layers.\(layer).momentum"] = try Tensor(momentum, shape: shape)
            }
            workspace["optimizer.step"] = Tensor(scalar: step)
        }
        epochLimiter(job, numEpochs: epochs, node: node)
        job.setMetric(node: node) { workspace in
            // A "loss" that falls as training goes on: the mean absolute weight of layer 0.
            let weights = try workspace.fetchBlob("layers.0.weight").scalars(as: Float.self)
            return Double(weights.reduce(0) { $0 + abs($1) }) / Double(weights.count)
        }
        return job
    }

    func initialBlobs() throws(CheckpointError) -> [(String, Tensor)] {
        var blobs: [(String, Tensor)] = []
        for layer in 0..<layers {
            var generator = SyntheticData(seed: UInt64(layer + 1))
            let bytes = generator.float32Weights(count: hidden * hidden)
            blobs.append(("layers.\(layer).weight", try Tensor(dtype: .float32, shape: [hidden, hidden], bytes: bytes)))
            blobs.append(("layers.\(layer).momentum", try Tensor(zeros: .float32, shape: [hidden, hidden])))
        }
        blobs.append(("optimizer.step", Tensor(scalar: Int64(0))))
        blobs.append(("vocabulary", Tensor(strings: ["<pad>", "<eos>", "hello", "world", "checkpoint"])))
        return blobs
    }

    func sgdStep(layer: Int, step: Int, weights: inout [Float], momentum: inout [Float]) {
        var generator = SyntheticData(seed: UInt64(step) << 20 | UInt64(layer))
        var gradient = [Float](repeating: 0, count: weights.count)
        gradient.withUnsafeMutableBufferPointer { generator.fillNormal($0, standardDeviation: 0.01) }
        for i in weights.indices {
            // Pull toward zero plus noise: weights shrink, so the demo's "loss" falls.
            let g = gradient[i] + 0.1 * weights[i]
            momentum[i] = 0.9 * momentum[i] + g
            weights[i] -= 0.05 * momentum[i]
        }
    }

    /// The blobs after `epoch` epochs, recomputed from scratch (for checking a load bit for bit).
    public func expectedBlobs(epoch: Int) throws(CheckpointError) -> [String: Tensor] {
        var blobs = Dictionary(uniqueKeysWithValues: try initialBlobs())
        for layer in 0..<layers {
            var weights = try blobs["layers.\(layer).weight"]!.scalars(as: Float.self)
            var momentum = try blobs["layers.\(layer).momentum"]!.scalars(as: Float.self)
            for step in stride(from: 1, through: epoch, by: 1) { sgdStep(layer: layer, step: step, weights: &weights, momentum: &momentum) }
            blobs["layers.\(layer).weight"] = try Tensor(weights, shape: [hidden, hidden])
            blobs["layers.\(layer).momentum"] = try Tensor(momentum, shape: [hidden, hidden])
        }
        blobs["optimizer.step"] = Tensor(scalar: Int64(epoch))
        blobs[epochLimiterCounterBlob] = Tensor(scalar: Int64(max(0, epochs - 1 - epoch)))
        return blobs
    }

    /// The names of the blobs of `workspace` that differ from the expected ones after `epoch` epochs (empty: bit-exact).
    public func mismatches(in workspace: Workspace, epoch: Int) throws(CheckpointError) -> [String] {
        try expectedBlobs(epoch: epoch).compactMap { name, tensor in workspace.blob(name) == tensor ? nil : name }.sorted()
    }
}
