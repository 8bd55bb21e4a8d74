"""`farm simulate`: traces, the discrete-event simulator, peer autoscalers, tuning. Pure."""
