# Variable tracking cost: the same function compiled untracked, tracked with no capture running
# ("disabled"), and tracked while a capture records every binding, in one run.
#
#     scripts/bench track          (or: MIX_ENV=prod mix run bench/track.exs)

Code.require_file("support/harness.exs", __DIR__)
alias Bench.Harness

source = fn name, header ->
  """
  defmodule #{name} do
    #{header}
    def total(items, discount) do
      subtotal = Enum.reduce(items, 0, fn {price, qty}, acc -> acc + price * qty end)
      taxed = subtotal * 1.2
      total = taxed * (1 - discount)
      rounded = Float.round(total, 2)
      {subtotal, rounded}
    end
  end
  """
end

# The bench runs in :prod, where tracking compiles to the original code unless enabled.
Application.put_env(:elixir_scope, :track, true)
Code.compile_string(source.("Bench.Track.Plain", ""))
Code.compile_string(source.("Bench.Track.Tracked", "use ElixirScope.Track, all: true"))

defmodule Bench.Track.Loop do
  # A plain tail-recursive loop: no list of results to build and collect.
  def run(_mod, _items, 0), do: :ok

  def run(mod, items, k) do
    mod.total(items, 0.1)
    run(mod, items, k - 1)
  end
end

n = String.to_integer(System.get_env("BENCH_N", "200000"))
rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "7"))
items = for i <- 1..3, do: {i * 1.5, i}

# Bindings recorded per call: items, discount, subtotal, taxed, total, rounded, and price, qty,
# acc for each of the 3 items.
per_call = 6 + 3 * 3

loop = fn mod ->
  fn ->
    {us, _} = :timer.tc(fn -> Bench.Track.Loop.run(mod, items, n) end)
    {us, %{}}
  end
end

enabled = fn ->
  {:ok, _} = ElixirScope.start(max_events: n * (per_call + 1) * 2)
  {us, _} = :timer.tc(fn -> Bench.Track.Loop.run(Bench.Track.Tracked, items, n) end)
  stats = ElixirScope.status()
  ElixirScope.stop()
  {us, %{events: stats.events, dropped: stats.dropped}}
end

Harness.header(
  "Variable tracking: #{n} calls, #{per_call} bindings per call, #{rounds} rounds (median)"
)

ElixirScope.stop()

results =
  Harness.run(
    [
      {"untracked", loop.(Bench.Track.Plain)},
      {"tracked, no capture running", loop.(Bench.Track.Tracked)},
      {"tracked, recording", enabled}
    ],
    rounds
  )

base = results["untracked"].median / n
disabled = results["tracked, no capture running"].median / n
on = results["tracked, recording"].median / n
recorded = results["tracked, recording"].extra.events

Harness.table(
  ["variant", "ns/call", "vs untracked", "ns per binding"],
  [
    ["untracked", Harness.f(base * 1000, 0), "1.00x", "-"],
    [
      "tracked, no capture running",
      Harness.f(disabled * 1000, 0),
      Harness.f(disabled / base) <> "x",
      "-"
    ],
    [
      "tracked, recording",
      Harness.f(on * 1000, 0),
      Harness.f(on / base) <> "x",
      Harness.f((on - base) * 1000 / per_call, 0)
    ]
  ]
)

IO.puts("\nrecorded #{recorded} events (#{per_call + 1} per call, the call's entry included)")
