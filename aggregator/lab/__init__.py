"""Lab tools: datasets, the simulator, experiments, energy budgets, cost fitting, reports."""
