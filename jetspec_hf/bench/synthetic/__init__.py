"""`jetspec-hf bench --synthetic`: a hardware check on random weights at Qwen3-8B shapes, no download.

`models` builds the target and head on the device, `oracle` forces each round's acceptance, `timing` times forwards
and generate calls, `host_syncs` counts host reads per round, `options` parses the mode's arguments and `report`
checks the goals and writes the tables; `run` drives them.
"""
