# History and content queries from Elixir: ElixirScope's native indexes, query DSL and
# aggregations against the seed's original design (every event a tuple in an ETS ordered_set,
# queried with match specs), on the same events, in one run.
#
#     scripts/bench query          (or: MIX_ENV=prod mix run bench/query.exs)
#
# The events are real: PROCS GenServers (default 1,000) each serve CALLS calls (default 200),
# traced with state capture (receive, handle_call call and return, state, reply: 5 events per
# call), 1 M events by default. The ETS table gets the very same events.

Code.require_file("support/harness.exs", __DIR__)
Code.require_file("support/workload.exs", __DIR__)
alias Bench.Harness
alias ElixirScope.Query

procs = String.to_integer(System.get_env("PROCS", "1000"))
calls = String.to_integer(System.get_env("CALLS", "200"))
rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "7"))
{store, servers, t0, t1} = Bench.Workload.run(procs, calls)
events = Query.events(store: store)
n_events = length(events)

# The seed's design: {seq, ts, kind, pid, peer, mfa, data} in an ordered_set keyed by seq.
tab = :ets.new(:seed_events, [:ordered_set, :public])
:ets.insert(tab, Enum.map(events, &{&1.seq, &1.ts, &1.kind, &1.pid, &1.peer, &1.mfa, &1.data}))
_ = events

Harness.header(
  "History queries: #{n_events} events of #{procs} GenServers, #{rounds} rounds (median)"
)

mid = div(t0 + t1, 2)
pick = fn -> Enum.random(servers) end
:rand.seed(:exsss, {1, 2, 3})

ets_state_at = fn pid, t ->
  ms = [{{:"$1", :"$2", :state, pid, :_, :_, :"$3"}, [{:"=<", :"$2", t}], [{{:"$1", :"$3"}}]}]

  case :ets.select(tab, ms) do
    [] -> nil
    hits -> hits |> Enum.max_by(&elem(&1, 0)) |> elem(1)
  end
end

ets_page = fn pid ->
  case :ets.select(tab, [{{:_, :_, :_, pid, :_, :_, :_}, [], [:"$_"]}], 1000) do
    {page, _cont} -> page
    :"$end_of_table" -> []
  end
end

ets_states_at = fn t ->
  ms = [{{:"$1", :"$2", :state, :"$3", :_, :_, :"$4"}, [{:"=<", :"$2", t}], [{{:"$3", :"$4"}}]}]
  tab |> :ets.select(ms) |> Map.new()
end

# Both sides must agree before they are timed.
for _ <- 1..20 do
  pid = pick.()
  {:ok, st} = Query.state_at(pid, mid, store: store)
  ^st = ets_state_at.(pid, mid)
end

^n_events = :ets.info(tab, :size)
states = Query.states_at(mid, store: store)
true = states == ets_states_at.(mid)
pid = pick.()

true =
  Enum.map(Query.events(store: store, pid: pid, limit: 1000), & &1.seq) ==
    Enum.map(ets_page.(pid), &elem(&1, 0))

# Content queries (the DSL and aggregations) against match specs over the same table.
threshold = div(procs, 2) + calls
state_source = "%{n: n} when n > #{threshold}"

ets_state_pattern = fn ->
  :ets.select(tab, [
    {{:"$1", :_, :state, :_, :_, :_, %{n: :"$2"}}, [{:>, :"$2", threshold}], [{{:"$1", :"$2"}}]}
  ])
end

ets_state_objects = fn ->
  :ets.select(tab, [
    {{:_, :_, :state, :_, :_, :_, %{n: :"$2"}}, [{:>, :"$2", threshold}], [:"$_"]}
  ])
end

# A selective one: the last few states of the last server only.
rare = procs + calls - 3
rare_source = "%{n: n} when n > #{rare}"

ets_rare = fn ->
  :ets.select(tab, [{{:_, :_, :state, :_, :_, :_, %{n: :"$2"}}, [{:>, :"$2", rare}], [:"$_"]}])
end

ets_add_count = fn ->
  :ets.select_count(tab, [
    {{:_, :_, :receive, :_, :_, :_, {:"$gen_call", :_, {:add, :"$1"}}}, [{:>, :"$1", 0}], [true]}
  ])
end

ets_top = fn ->
  tab
  |> :ets.select([{{:_, :_, :receive, :"$1", :_, :_, :_}, [], [:"$1"]}])
  |> Enum.frequencies()
  |> Enum.sort_by(fn {pid, n} -> {-n, pid} end)
  |> Enum.take(10)
end

dsl_states = Query.find(store: store, state: state_source)
true = Enum.map(dsl_states, &{&1.event.seq, &1.binds["n"]}) == Enum.sort(ets_state_pattern.())
true = length(ets_state_objects.()) == length(dsl_states)
rare_states = Query.find(store: store, state: rare_source)
true = length(rare_states) == length(ets_rare.()) and rare_states != []
true = dsl_states != []
add_count = Query.count(store: store, message: "{:\"$gen_call\", _, {:add, k}} when k > 0")
^add_count = ets_add_count.()
true = add_count > 0
top = Query.top([store: store, kind: :receive], :pid, 10)
true = Enum.map(top, &elem(&1, 1)) == Enum.map(ets_top.(), &elem(&1, 1))

reps = 20

# Each answer is dropped before the next query (a `for` would keep all `reps` of them alive,
# and the bigger answers would pay for the garbage collector copying the others).
time = fn f ->
  {us, _} = :timer.tc(fn -> Enum.each(1..reps, fn _ -> f.() end) end)
  {us / reps, %{}}
end

variants = [
  {"state_at: ElixirScope",
   fn -> time.(fn -> Query.state_at(pick.(), mid, store: store) end) end},
  {"state_at: ETS match spec", fn -> time.(fn -> ets_state_at.(pick.(), mid) end) end},
  {"timeline page: ElixirScope",
   fn -> time.(fn -> Query.events(store: store, pid: pick.(), limit: 1000) end) end},
  {"timeline page: ETS match spec", fn -> time.(fn -> ets_page.(pick.()) end) end},
  {"states of all at T: ElixirScope",
   fn -> time.(fn -> Query.states_at(mid, store: store) end) end},
  {"states of all at T: ETS match spec", fn -> time.(fn -> ets_states_at.(mid) end) end},
  {"find state #{state_source} (#{length(dsl_states)} events): ElixirScope",
   fn -> time.(fn -> Query.find(store: store, state: state_source) end) end},
  {"find state (whole objects): ETS match spec", fn -> time.(ets_state_objects) end},
  {"find state #{state_source} (values only): ElixirScope",
   fn -> time.(fn -> Query.find(store: store, state: state_source, select: :binds) end) end},
  {"find state (values only): ETS match spec", fn -> time.(ets_state_pattern) end},
  {"find state #{rare_source} (#{length(rare_states)} events): ElixirScope",
   fn -> time.(fn -> Query.find(store: store, state: rare_source) end) end},
  {"find rare state: ETS match spec", fn -> time.(ets_rare) end},
  {"count {:\"$gen_call\", _, {:add, k}} when k > 0: ElixirScope",
   fn ->
     time.(fn ->
       Query.count(store: store, message: "{:\"$gen_call\", _, {:add, k}} when k > 0")
     end)
   end},
  {"count gen_call: ETS match spec", fn -> time.(ets_add_count) end},
  {"top 10 processes by receives: ElixirScope",
   fn -> time.(fn -> Query.top([store: store, kind: :receive], :pid, 10) end) end},
  {"top 10: ETS match spec", fn -> time.(ets_top) end}
]

results = Harness.run(variants, rounds)

rows =
  for [{es, _}, {ets, _}] <- Enum.chunk_every(variants, 2) do
    a = results[es].median
    b = results[ets].median

    [
      String.replace(es, ": ElixirScope", ""),
      Harness.f(a, 1),
      Harness.f(b, 1),
      Harness.f(b / a, if(b / a < 10, do: 2, else: 0)) <> "x"
    ]
  end

Harness.table(["query", "ElixirScope µs", "ETS (seed) µs", "speed-up"], rows)
