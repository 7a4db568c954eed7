"""Where the RL² settings that lost their experiments went.

Eleven config fields (exploit episodes, a success bonus and a success reward inside PPO, learning-rate and log σ
schedules, a log σ floor, a σ-scaled KL stop) were tried on ML1-reach, scored below the reference settings, and
were removed.  Their code, tests and the results they produced are at :data:`LAST_COMMIT_WITH_EXPERIMENTS`; a
run's ``config.json`` that holds one of them at its old default still loads, any other value is refused naming
that commit (:class:`metarl.config.RemovedField`).
"""

LAST_COMMIT_WITH_EXPERIMENTS = "bce0993"
"""The last commit with the removed RL² settings: check it out to rerun a config that set one."""
