"""The replica environment carries the platform's per-variant defaults, which a container may override."""

from __future__ import annotations

from pathlib import Path

from neurondock_platform.config import Settings
from neurondock_workers.hosting.environment import replica_environment

MODEL_DIR = Path("/srv/replicas/7/model")
WEIGHTS_DIR = Path("/srv/cache/weights")


def test_settings_read_the_new_variables():
    settings = Settings.from_env(
        {
            "NEURONDOCK_REPLICA_MAX_MEMORY_GROWTH_MB": "256",
            "NEURONDOCK_SHARE_WEIGHTS": "off",
            "NEURONDOCK_STANDBY_POOL_SIZE": "0",
            "NEURONDOCK_STANDBY_WHILE_SERVING": "1",
        }
    )
    assert (
        settings.replica_max_memory_growth_mb,
        settings.share_weights,
        settings.standby_pool_size,
        settings.standby_while_serving,
    ) == (256, False, 0, True)
    defaults = Settings.from_env({})
    assert (
        defaults.replica_max_memory_growth_mb,
        defaults.share_weights,
        defaults.standby_pool_size,
        defaults.standby_while_serving,
    ) == (1024, True, 1, False)


def test_defaults_and_the_weight_cache_reach_the_replica():
    env = replica_environment(Settings(), {}, MODEL_DIR, 7, None, "key1", WEIGHTS_DIR)

    assert env["NEURONDOCK_MAX_MEMORY_GROWTH_MB"] == "1024"
    assert (env["NEURONDOCK_SHARE_WEIGHTS"], env["NEURONDOCK_WEIGHTS_KEY"]) == ("1", "key1")
    assert env["NEURONDOCK_WEIGHTS_CACHE"] == str(WEIGHTS_DIR)


def test_a_container_overrides_the_limit_and_may_opt_out_of_sharing():
    container = {"Environment": {"NEURONDOCK_MAX_MEMORY_GROWTH_MB": "32", "NEURONDOCK_SHARE_WEIGHTS": "0"}}

    env = replica_environment(Settings(), container, MODEL_DIR, 7, None, "key1", WEIGHTS_DIR)

    assert env["NEURONDOCK_MAX_MEMORY_GROWTH_MB"] == "32"
    assert env["NEURONDOCK_SHARE_WEIGHTS"] == "0"


def test_sharing_off_for_the_host_wins_over_the_container():
    container = {"Environment": {"NEURONDOCK_SHARE_WEIGHTS": "1"}}

    env = replica_environment(Settings(share_weights=False), container, MODEL_DIR, 7, None, "key1", WEIGHTS_DIR)

    assert env["NEURONDOCK_SHARE_WEIGHTS"] == "0"
    assert "NEURONDOCK_WEIGHTS_CACHE" not in env and "NEURONDOCK_WEIGHTS_KEY" not in env


def test_replicas_run_one_thread_unless_the_container_sets_omp_num_threads():
    def threads(environment: dict[str, str] | None = None, cores: list[int] | None = None) -> int:
        container = {"Environment": environment or {}}
        env = replica_environment(Settings(), container, MODEL_DIR, 7, {"cores": cores} if cores else None)
        return int(env["NEURONDOCK_TORCH_THREADS"])

    assert threads() == 1
    assert threads(cores=[0]) == 1
    assert threads({"OMP_NUM_THREADS": "3"}) == 3
    assert threads({"OMP_NUM_THREADS": "many"}) == 1
