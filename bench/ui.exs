# The web UI's cost, in one run:
#
#   1. p50/p95 latency of its main endpoints, over HTTP (OTP's :httpc, one connection), on a
#      capture of 1 M real events (Bench.Workload: PROCS GenServers x CALLS calls, 5 events
#      per call);
#   2. what an open live view adds to the capture cost of W1's call loop: the page polls the
#      status and the tail (events after the last seq it has) once a second; a poller doing
#      the same, and one polling ten times as often, run beside the loop.
#
#     scripts/bench ui             (or: MIX_ENV=prod mix run bench/ui.exs)
#     PROCS, CALLS, REQUESTS (per endpoint, default 30), BENCH_N (W1 calls), BENCH_ROUNDS

Code.require_file("support/harness.exs", __DIR__)
Code.require_file("support/workload.exs", __DIR__)
alias Bench.Harness
alias ElixirScope.{Event, Query, UI}

procs = String.to_integer(System.get_env("PROCS", "1000"))
calls = String.to_integer(System.get_env("CALLS", "200"))
requests = String.to_integer(System.get_env("REQUESTS", "30"))
n = String.to_integer(System.get_env("BENCH_N", "300000"))
rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "3"))

{:ok, _} = Application.ensure_all_started(:inets)
{store, servers, _t0, _t1} = Bench.Workload.run(procs, calls)
stats = ElixirScope.Store.stats(store)
{:ok, ui} = UI.start(port: 0, store: store)
:httpc.set_options(max_sessions: 1, max_keep_alive_length: 1_000_000)

get = fn path ->
  url = String.to_charlist(ui.url <> path)
  {:ok, {{_, 200, _}, _, body}} = :httpc.request(:get, {url, []}, [], body_format: :binary)
  body
end

pid = fn p -> URI.encode_www_form(inspect(p)) end
mid = Enum.at(servers, div(procs, 2))
mid_seq = div(stats.last_seq, 2)
# A caller of the middle server (the workload's callers are untraced tasks: its calls are
# drawn from their receipt, the replies from their send).
[%Event{data: {:"$gen_call", {caller, _}, _}} | _] =
  Query.events(store: store, pid: mid, kind: :receive, limit: 1)

called =
  for %Event{data: {:"$gen_call", {^caller, _}, _}, pid: server} <-
        Query.events(store: store, kind: :receive, limit: 20_000),
      uniq: true,
      do: server

flow_pids =
  Enum.map_join([caller | Enum.take(called, 4)], ",", &inspect/1) |> URI.encode_www_form()

endpoints = [
  {"status", "api/status"},
  {"live tail (200 newest)", "api/events?after_seq=#{stats.last_seq - 200}&limit=200"},
  {"events matching a pattern (100)",
   "api/events?pattern_key=state&pattern=" <>
     URI.encode_www_form("%{n: n} when n > 150") <> "&limit=100"},
  {"processes (busiest 500 of 1,000)", "api/processes"},
  {"process page", "api/process?pid=#{pid.(mid)}"},
  {"timeline page (100, mid-capture)",
   "api/timeline?pid=#{pid.(mid)}&after_seq=#{mid_seq}&limit=100"},
  {"state history page (100 states)", "api/states?pid=#{pid.(mid)}&limit=100"},
  {"sequence diagram (1,000 messages)", "api/flow?pids=#{flow_pids}&limit=1000"},
  {"supervision tree at T", "api/tree?at=#{mid_seq}&from=1"},
  {"replay step (mid-capture)", "api/replay?seq=#{mid_seq}&step=next"}
]

Harness.header(
  "Web UI endpoints over HTTP: #{stats.events} events of #{procs} GenServers, #{requests} requests each"
)

# Timed by curl when there is one (as a browser: one keep-alive connection, its own clock, so
# the client's parsing is not counted), else by :httpc around each request.
curl = System.find_executable("curl")

timings = fn path ->
  if curl do
    url = ui.url <> path
    args = ["-s", "-o", "/dev/null", "-w", "%{time_total}\\n"]
    {out, 0} = System.cmd(curl, Enum.flat_map(1..requests, fn _ -> args ++ [url] end))
    out |> String.split() |> Enum.map(&(String.to_float(&1) * 1000))
  else
    for _ <- 1..requests do
      {us, _} = :timer.tc(fn -> get.(path) end)
      us / 1000
    end
  end
end

IO.puts("client: #{if curl, do: "curl (time_total)", else: ":httpc"}\n")

rows =
  for {name, path} <- endpoints do
    body = get.(path)
    times = path |> timings.() |> Enum.sort()

    p = fn q -> Enum.at(times, min(length(times) - 1, round(q * (length(times) - 1)))) end

    [
      name,
      Harness.f(p.(0.5), 1),
      Harness.f(p.(0.95), 1),
      "#{div(byte_size(body), 1024)} KiB",
      if(p.(0.95) <= 50, do: "yes", else: "no")
    ]
  end

Harness.table(["endpoint", "p50 ms", "p95 ms", "response", "p95 ≤ 50 ms"], rows)
UI.stop()
IO.puts("")

# 2. The live view's cost on the call loop.
defmodule Bench.UILoop do
  @moduledoc false
  use GenServer
  def init(n), do: {:ok, n}
  def handle_call({:inc, k}, _from, n), do: {:reply, n + k, n + k}

  def loop(_server, 0), do: :ok

  def loop(server, k) do
    GenServer.call(server, {:inc, 1})
    loop(server, k - 1)
  end

  # A page: polls the status and the tail every `every` ms until told to stop.
  def poller(url, every, last) do
    receive do
      :stop -> :ok
    after
      every ->
        {:ok, {{_, 200, _}, _, _}} =
          :httpc.request(:get, {String.to_charlist(url <> "api/status"), []}, [],
            body_format: :binary
          )

        tail = url <> "api/events?after_seq=#{last}&limit=200"

        {:ok, {{_, 200, _}, _, body}} =
          :httpc.request(:get, {String.to_charlist(tail), []}, [], body_format: :binary)

        {:ok, page} = ElixirScope.UI.JSON.decode(body)
        poller(url, every, page["scanned_to"] || last)
    end
  end
end

Harness.header(
  "W1's call loop (N=#{n}) traced by ElixirScope, with and without an open live view, #{rounds} rounds (median)"
)

variant = fn poll_every ->
  fn ->
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start(max_events: n * 5 + 10_000)
    {:ok, server} = GenServer.start(Bench.UILoop, 0)
    :ok = ElixirScope.trace(server)
    {:ok, ui} = UI.start(port: 0)

    poller = if poll_every, do: spawn(fn -> Bench.UILoop.poller(ui.url, poll_every, 0) end)

    cpu0 = Harness.cpu_us()
    {us, _} = :timer.tc(fn -> Bench.UILoop.loop(server, n) end)
    cpu = Harness.cpu_us() - cpu0
    if poller, do: send(poller, :stop)
    UI.stop()
    GenServer.stop(server)
    {us, %{cpu_us: cpu}}
  end
end

variants = [
  {"ElixirScope, no UI", variant.(nil)},
  {"ElixirScope, live view open (polls every 1 s)", variant.(1000)},
  {"ElixirScope, 10x the page's polling (every 100 ms)", variant.(100)}
]

results = Harness.run(variants, rounds)
base = results["ElixirScope, no UI"].median

Harness.table(
  ["variant", "µs/call", "CPU µs/call", "vs no UI"],
  for {name, _} <- variants do
    r = results[name]
    [name, Harness.f(r.median / n), Harness.f(r.cpu / n), Harness.f(r.median / base) <> "x"]
  end
)

ElixirScope.stop()
