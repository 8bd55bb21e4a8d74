"""Capacity: pure policies, what the predictive one learns, and the live autoscaler that
runs them (the only module here that does I/O).

    kinds        policy kinds as data: Snapshot, Decision, each kind's configuration (the bottom)
    policy       decide(snapshot, policy, now=...) -> Decision: the shared steps around a kind's rule
    registry     the one registry of kinds: configuration class, sizing rule, memory document
    own          farm's own kinds' sizing rules (reactive, scheduled, predictive) and their memory
    peers        peer autoscalers (Jenkins, GitLab, ARC, KEDA), for `farm simulate`
    forecast     what the predictive policy learns, and the idle buffer it plans from it
    document     what a policy learned, as a JSON document: the readers and the number writer
    demand       a pool's demand by hour: what the autoscaler keeps and `farm policy seed` sends
    live         the live autoscaler: observe → decide → act for each pool with a policy
"""
