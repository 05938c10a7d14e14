"""Lab tools: datasets, the simulator, experiments, energy budgets, cost fitting, reports.

* datasets:     CATD files, loaders, the RCV1-like generator, partitions, full-data references.
* problem:      what a simulated federation trains on: Problem, load_data, make_problem, sizes.
* pricing:      what a frame costs under a cost profile (NodeCost, link models, COST_METRICS).
* engine:       the rounds of eq. (10): SimConfig, simulate, recost; Infeasible and Diverged.
* results:      SimResult and the run-log files (run.json, rounds.csv, nodes.csv): save, load.
* cliargs:      flags the lab's subcommands share (data, --fmt, integer lists), ArgumentError.
* simulate:     the `simulate` and `partition` subcommands.
* experiments/: `experiment NAME`: one module per experiment, `common` for what they share.
* energy:       `profile`: radio energy, duty cycle and battery life from a run log or a plan.
* costfit:      `measure` and `fit-cost`: real frames timed, affine and packet models fitted.
* reports:      tables, plots and report.md, alike for every command.

Every error a user can cause is a subclass of `aggregator.errors.UserError` named in the
module that raises it, so the CLI prints it as one line.
"""
