defmodule ElixirScope.StressTest do
  # Races that once crashed the VM, run for a bounded time in a BEAM of their own: the test
  # asserts that BEAM exits normally, having answered queries all along.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  @moduletag timeout: 120_000

  # Seconds each race runs (ELIXIR_SCOPE_STRESS_SECONDS for a longer run by hand).
  @seconds System.get_env("ELIXIR_SCOPE_STRESS_SECONDS", "12")

  test "queries of every kind racing restarts, untraces and store switches never crash the VM" do
    dir = temp_path("escope-races")
    File.mkdir_p!(dir)
    {out, status} = run_beam([], scenario("query_races"), [@seconds, dir])
    assert status == 0, "the racing BEAM died (status #{status}):\n" <> out
    [_, cycles, queries] = Regex.run(~r/cycles: (\d+), queries: (\d+), refused: 0/, out)
    assert String.to_integer(cycles) > 3, out
    assert String.to_integer(queries) > 500, out
  end
end
