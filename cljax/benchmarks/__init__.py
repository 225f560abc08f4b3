"""The benchmarks: the datasets (`data`), the `Scenario` type and per-seed pixel maps (`scenario`), the task sequences (`scenarios`) and the general-continual-learning streams (`streams`)."""
