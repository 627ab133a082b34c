"""stylebot's Discord side: commands, the job queue and the engine processes.

Importing `bot` never imports TensorFlow: the engine runs in its own processes
(engine/worker.py) and the bot only speaks the job contract (engine/jobs.py).
"""
