"""facejax.xla_flags: defaults added, the user's settings kept."""

from facejax import xla_flags

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def test_defaults_join_the_users_flags():
  merged = xla_flags.merged("--xla_force_host_platform_device_count=4")
  assert merged.split() == ["--xla_force_host_platform_device_count=4",
                            f"{FLAG}=true"]
  assert xla_flags.merged(None) == xla_flags.merged("") == f"{FLAG}=true"


def test_a_flag_the_user_set_is_left_as_set():
  assert xla_flags.merged(f"{FLAG}=false") == f"{FLAG}=false"
  environ = {"XLA_FLAGS": f"  {FLAG}=false  --xla_cpu_use_thunk_runtime=1"}
  xla_flags.apply(environ)
  assert environ["XLA_FLAGS"].split() == [f"{FLAG}=false",
                                          "--xla_cpu_use_thunk_runtime=1"]
  xla_flags.apply(environ)  # Idempotent.
  assert environ["XLA_FLAGS"].split().count(f"{FLAG}=false") == 1
