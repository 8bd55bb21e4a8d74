"""`farm simulate`: traces, the discrete-event simulator, demand history, tuning. Pure
(the peer autoscalers it compares are farm.autoscale.peers).

    trace        demand traces: CSV, one job a row
    simulator    discrete-event replay of a trace through a capacity policy
    history      demand history (farm.autoscale.demand) replayed as a trace, and what a policy learns from it
    tune         runs policies over a trace, and tunes the peers' knobs
    weekly       a replay's figures week by week, and the waits the trace's CI system observed
    plot         the week plot of `farm simulate --plot` (the only module that imports matplotlib)
"""
