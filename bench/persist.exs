# Traces on disk: ElixirScope's segment files against OTP's :disk_log (what an Elixir-only tool
# would use), writing the same events, reading them back and answering state_at, in one run.
#
#     scripts/bench persist        (or: MIX_ENV=prod mix run bench/persist.exs)
#
# The events are real: PROCS GenServers (default 500) each serve CALLS calls (default 200),
# traced with state capture (5 events per call), 500 k events by default. ElixirScope saves from
# its store and opens into a read-only store (paged: the index from footers, events read when
# asked for; "read back every event" asks for all of them as Event structs); :disk_log logs the very same events as terms
# ({seq, ts, kind, pid, peer, mfa, data}, in chunks of 1,000), reads them all back with
# chunk/2, and answers state_at by scanning what it read.

Code.require_file("support/harness.exs", __DIR__)
Code.require_file("support/workload.exs", __DIR__)
alias Bench.Harness
alias ElixirScope.{Persist, Query}

procs = String.to_integer(System.get_env("PROCS", "500"))
calls = String.to_integer(System.get_env("CALLS", "200"))
rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "5"))
{store, servers, _t0, _t1} = Bench.Workload.run(procs, calls)
events = Query.events(store: store)
n = length(events)
terms = Enum.map(events, &{&1.seq, &1.ts, &1.kind, &1.pid, &1.peer, &1.mfa, &1.data})
chunks = Enum.chunk_every(terms, 1000)
mid = Enum.at(events, div(n, 2)).ts
_ = events

tmp = Path.join(System.tmp_dir!(), "escope-bench-persist-#{System.os_time()}")
File.mkdir_p!(tmp)
counter = :counters.new(1, [])

next_path = fn name ->
  :counters.add(counter, 1, 1)
  Path.join(tmp, "#{name}-#{:counters.get(counter, 1)}")
end

du = fn path ->
  if File.dir?(path),
    do: path |> File.ls!() |> Enum.map(&File.stat!(Path.join(path, &1)).size) |> Enum.sum(),
    else: File.stat!(path).size
end

disk_log_write = fn path ->
  {:ok, log} = :disk_log.open(name: make_ref(), file: to_charlist(path), type: :halt)
  Enum.each(chunks, &(:ok = :disk_log.log_terms(log, &1)))
  :ok = :disk_log.sync(log)
  :ok = :disk_log.close(log)
end

disk_log_read = fn path ->
  {:ok, log} =
    :disk_log.open(name: make_ref(), file: to_charlist(path), type: :halt, mode: :read_only)

  read = fn read, cont, acc ->
    case :disk_log.chunk(log, cont) do
      :eof -> acc
      {cont, terms} -> read.(read, cont, [terms | acc])
    end
  end

  all = read.(read, :start, []) |> Enum.reverse() |> Enum.concat()
  :ok = :disk_log.close(log)
  all
end

# state_at by scanning read terms: the last state of `pid` at or before `t`.
scan_state_at = fn all, pid, t ->
  Enum.reduce(all, nil, fn
    {_, ts, :state, ^pid, _, _, data}, _acc when ts <= t -> data
    _, acc -> acc
  end)
end

# Both sides must hold the same events (and count them alike) before they are timed.
dl_path = next_path.("disk_log")
disk_log_write.(dl_path)
dl_all = disk_log_read.(dl_path)
^n = length(dl_all)
es_path = next_path.("escope")
{:ok, ^n} = Persist.save(store, es_path)
{:ok, opened} = ElixirScope.open(es_path)
pid = Enum.random(servers)
{:ok, st} = Query.state_at(pid, mid, store: opened)
^st = scan_state_at.(dl_all, pid, mid)
{:ok, summary} = Persist.summary(es_path)
true = summary.kinds == Enum.frequencies_by(dl_all, &elem(&1, 2))
es_bytes = du.(es_path)
dl_bytes = du.(dl_path)

# Archived: the same store persisted with rotation every 4 MiB and `archive: true` (lz4).
ar_path = next_path.("archive")

:ok =
  Persist.start(
    store,
    Persist.options!(dir: ar_path, segment_bytes: 4 * 1024 * 1024, archive: true)
  )

{:ok, ^n} = Persist.finish(store)
archived = du.(ar_path) - File.stat!(Path.join(ar_path, "MANIFEST")).size

# A running persisted capture: `store: :trace` queries read its trace on disk, so that events
# of stores it let go still answer (the store following the trace, as Persist.trace_store/1
# gives it).
live_dir = next_path.("live")
live_opts = Persist.options!(dir: live_dir)
:ok = Persist.start(store, live_opts)
{:ok, ^n} = Persist.flush(store)
followed = Persist.with_follower(store, live_opts)
{:ok, trace} = Persist.trace_store(followed)
{:ok, ^st} = Query.state_at(pid, mid, store: trace)

Harness.header("Persistence: #{n} events of #{procs} GenServers, #{rounds} rounds (median)")

# state_at is timed over the same 20 random servers on both sides.
picks = Enum.take_random(servers, 20)

variants = [
  {"write: ElixirScope save",
   fn -> :timer.tc(fn -> Persist.save(store, next_path.("escope")) end) end},
  {"write: :disk_log", fn -> :timer.tc(fn -> disk_log_write.(next_path.("disk_log")) end) end},
  {"open: ElixirScope", fn -> :timer.tc(fn -> ElixirScope.open(es_path) end) end},
  {"open: :disk_log chunk/2", fn -> :timer.tc(fn -> length(disk_log_read.(dl_path)) end) end},
  {"open and read every event: ElixirScope",
   fn ->
     :timer.tc(fn ->
       {:ok, s} = ElixirScope.open(es_path)
       length(Query.events(store: s))
     end)
   end},
  {"summary: ElixirScope (footers)", fn -> :timer.tc(fn -> Persist.summary(es_path) end) end},
  {"summary: :disk_log (read, count by kind)",
   fn ->
     :timer.tc(fn -> disk_log_read.(dl_path) |> Enum.frequencies_by(&elem(&1, 2)) end)
   end},
  {"state_at: ElixirScope (opened)",
   fn -> :timer.tc(fn -> for p <- picks, do: Query.state_at(p, mid, store: opened) end) end},
  {"state_at: running capture, its trace",
   fn ->
     :timer.tc(fn ->
       for p <- picks do
         {:ok, trace} = Persist.trace_store(followed)
         Query.state_at(p, mid, store: trace)
       end
     end)
   end},
  {"state_at: running capture, its memory",
   fn -> :timer.tc(fn -> for p <- picks, do: Query.state_at(p, mid, store: store) end) end},
  {"state_at: scan of :disk_log terms",
   fn -> :timer.tc(fn -> for p <- picks, do: scan_state_at.(dl_all, p, mid) end) end}
]

results = Harness.run(variants, rounds)
{:ok, ^n} = Persist.finish(store)
File.rm_rf!(tmp)

row = fn what, a, b, unit ->
  ra = results[a].median
  rb = results[b].median

  [
    what,
    unit.(ra),
    unit.(rb),
    Harness.f(rb / ra, if(rb / ra < 10, do: 2, else: 0)) <> "x"
  ]
end

rate = fn us -> Harness.f(n / (us / 1.0e6) / 1.0e6) <> " M events/s" end
ms = fn us -> Harness.f(us / 1000, 1) <> " ms" end
usf = fn us -> Harness.f(us / length(picks), 1) <> " µs" end

Harness.table(
  ["", "ElixirScope", ":disk_log", "ElixirScope's advantage"],
  [
    row.("write (events/s)", "write: ElixirScope save", "write: :disk_log", rate),
    row.("open (ElixirScope: paged)", "open: ElixirScope", "open: :disk_log chunk/2", ms),
    row.(
      "open and read back every event",
      "open and read every event: ElixirScope",
      "open: :disk_log chunk/2",
      ms
    ),
    row.(
      "summary (events by kind, ...)",
      "summary: ElixirScope (footers)",
      "summary: :disk_log (read, count by kind)",
      ms
    ),
    row.(
      "state_at on the read trace",
      "state_at: ElixirScope (opened)",
      "state_at: scan of :disk_log terms",
      usf
    ),
    [
      "bytes per event on disk",
      Harness.f(es_bytes / n, 1),
      Harness.f(dl_bytes / n, 1),
      Harness.f(dl_bytes / es_bytes) <> "x"
    ],
    ["bytes per event archived (lz4)", Harness.f(archived / n, 1), "-", "-"]
  ]
)

IO.puts("""

A running persisted capture answers `store: :trace` queries from its trace on disk (each reads
on from where the last one stopped), so that the events of the stores it has let go still
answer; the same query on the store in memory, for the cost of that:
""")

Harness.table(
  ["", "from the trace", "from memory", "cost of reading the trace"],
  [
    [
      "state_at of a running capture",
      usf.(results["state_at: running capture, its trace"].median),
      usf.(results["state_at: running capture, its memory"].median),
      Harness.f(
        results["state_at: running capture, its trace"].median /
          results["state_at: running capture, its memory"].median
      ) <> "x"
    ]
  ]
)
