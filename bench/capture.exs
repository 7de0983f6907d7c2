# Capture cost: one workload traced by each tracer, in one run.
#
#     scripts/bench capture          (or: MIX_ENV=prod mix run bench/capture.exs)
#
# The workload: a client makes N GenServer calls to a server. The server is traced for send,
# receive, procs and calls of its handle_call/3 with return trace, so each call makes 4 events
# (receive, call, return, send). A variant's time runs until every event is stored: a tracer
# process still draining its mailbox is not done.
#
# Variants: untraced; a no-op NIF tracer (the VM's own floor: every event offered to a NIF that
# stores nothing); ElixirScope; :dbg with a process tracer; a tracer process writing each event
# into ETS (the seed's original design). Beside the latency, the CPU the whole VM used (every
# thread, so work moved off the traced process still counts); and the same loop run by two
# client/server pairs at once, both cores busy, where any extra thread competes with the
# workload.
#
# Then W2 (large states, bench/support/states.exs) and P3 (overload, bench/support/overload.exs).
# BENCH_PARTS=W1,W2,P3 picks the parts (all by default).

Code.require_file("support/harness.exs", __DIR__)
alias Bench.Harness
alias ElixirScope.{Persist, Store, Tracer}

defmodule Bench.Server do
  use GenServer
  def init(n), do: {:ok, n}
  def handle_call({:inc, by}, _from, n), do: {:reply, n + by, n + by}
end

defmodule Bench.Capture do
  import Bitwise
  @n String.to_integer(System.get_env("BENCH_N", "100000"))
  @events_per_call 4
  @flags [:send, :receive, :procs, :call]
  @ms [{:_, [], [{:return_trace}, {:exception_trace}]}]

  def n, do: @n
  def events_per_call, do: @events_per_call

  # Runs the call loop against a fresh server traced by `setup` (with `pairs` client/server
  # pairs at once, each making N calls); `drained?` says when the tracer has every event.
  # Returns {microseconds, info}, info with the CPU the VM used meanwhile (`cpu_us`).
  def run(setup, drained?, info, pairs \\ 1) do
    servers = for _ <- 1..pairs, do: elem(GenServer.start(Bench.Server, 0), 1)
    state = setup.(servers)
    :erlang.trace_pattern({Bench.Server, :handle_call, 3}, @ms, [:local])
    cpu0 = Harness.cpu_us()

    {us, _} =
      :timer.tc(fn ->
        servers
        |> Enum.map(fn s -> Task.async(fn -> loop(s, @n) end) end)
        |> Enum.each(&Task.await(&1, :infinity))

        Harness.wait_until(fn -> drained?.(state) end)
      end)

    cpu = Harness.cpu_us() - cpu0
    :erlang.trace_pattern({Bench.Server, :_, :_}, false, [:local])
    for s <- servers, do: :erlang.trace(s, false, [:all])
    result = info.(state)
    for s <- servers, do: GenServer.stop(s)
    {us, Map.put(result, :cpu_us, cpu)}
  end

  @doc "Makes `k` calls to `server` (W1's loop)."
  def loop(_server, 0), do: :ok

  def loop(server, k) do
    GenServer.call(server, {:inc, 1})
    loop(server, k - 1)
  end

  def expected, do: @n * @events_per_call

  # The variants of one mode: `pairs` client/server pairs at once.
  def variants(pairs \\ 1) do
    suffix = if pairs == 1, do: "", else: ", both cores busy"

    [
      {"untraced" <> suffix,
       fn -> run(fn _ -> nil end, fn _ -> true end, fn _ -> %{} end, pairs) end},
      {"no-op NIF tracer (floor)" <> suffix, fn -> null_tracer(pairs) end},
      {"ElixirScope" <> suffix, fn -> elixir_scope(:warm, true, pairs) end}
    ] ++ if(pairs == 1, do: more_variants(), else: [])
  end

  defp null_tracer(pairs) do
    run(
      fn servers ->
        for s <- servers do
          :erlang.trace(
            s,
            true,
            @flags ++ [{:tracer, ElixirScope.Native, :elixir_scope_null_tracer}]
          )
        end
      end,
      fn _ -> true end,
      fn _ -> %{} end,
      pairs
    )
  end

  defp more_variants do
    [
      {"ElixirScope, cold memory", fn -> elixir_scope(:cold) end},
      {"ElixirScope, no receive pattern", fn -> elixir_scope(:warm, false) end},
      {"ElixirScope, persisted", fn -> elixir_scope_persisted() end},
      {"ElixirScope, flight recorder", fn -> elixir_scope_flight_recorder(:memory) end},
      {"ElixirScope, flight recorder on disk", fn -> elixir_scope_flight_recorder(:disk) end},
      {"ElixirScope, rate cap armed", fn -> elixir_scope(:warm, true, 1, :rate_cap) end},
      {"ElixirScope, ring mode evicting", fn -> elixir_scope(:warm, true, 1, :ring) end},
      {"ElixirScope.watch, printing to a null device", fn -> elixir_scope_watch() end},
      {":dbg (process tracer)",
       fn ->
         run(
           fn [s] ->
             counter = :counters.new(1, [])

             {:ok, _} =
               :dbg.tracer(:process, {fn _msg, c -> :counters.add(c, 1, 1) && c end, counter})

             {:ok, _} = :dbg.p(s, [:s, :r, :c, :procs])
             counter
           end,
           fn c -> :counters.get(c, 1) >= expected() end,
           fn c ->
             stored = :counters.get(c, 1)
             :dbg.stop()
             %{stored: stored, dropped: 0, bytes: nil}
           end
         )
       end},
      {":dbg printing to a null device",
       fn ->
         run(
           fn [s] ->
             device = spawn(fn -> null_device(0, nil) end)

             # Like :dbg's own printing handler, for the calls: one formatted line each.
             {:ok, _} =
               :dbg.tracer(
                 :process,
                 {fn
                    {:trace, _, :call, _} = msg, d ->
                      :io.format(d, "~p~n", [msg])
                      d

                    _, d ->
                      d
                  end, device}
               )

             {:ok, _} = :dbg.p(s, [:c])
             device
           end,
           fn device -> null_device_count(device) >= n() end,
           fn device ->
             printed = null_device_count(device)
             :dbg.stop()
             Process.exit(device, :kill)
             %{stored: printed, dropped: 0, bytes: nil}
           end
         )
       end},
      {"tracer process + ETS (seed design)",
       fn ->
         run(
           fn [s] ->
             tab = :ets.new(:bench_events, [:ordered_set, :public])
             tracer = spawn(fn -> ets_tracer(tab, 0) end)
             :erlang.trace(s, true, @flags ++ [{:tracer, tracer}])
             {tab, tracer}
           end,
           fn {tab, _} -> :ets.info(tab, :size) >= expected() end,
           fn {tab, tracer} ->
             Process.exit(tracer, :kill)

             r = %{
               stored: :ets.info(tab, :size),
               dropped: 0,
               bytes: :ets.info(tab, :memory) * :erlang.system_info(:wordsize)
             }

             :ets.delete(tab)
             r
           end
         )
       end}
    ]
  end

  # ElixirScope into a fresh store. :warm reuses the memory earlier stores left in the pool (the
  # steady state of a long capture, or any capture after the first); :cold releases the pool
  # first, so every byte is freshly committed, as in a VM's very first capture. With the receive
  # trace pattern that tells timeouts from messages, as a running capture sets it (`timeouts?`
  # false leaves it out, to show what it costs).
  # `extra`: `:rate_cap`, or `:ring`, a ring-mode store of eight generations of 32,768 events
  # (a huge page of slots each, as a store of a million events has), which the loop's 400,000
  # events fill and go on evicting.
  defp elixir_scope(memory, timeouts? \\ true, pairs \\ 1, extra \\ nil) do
    if memory == :cold, do: Store.release_memory()

    run(
      fn servers ->
        store =
          case extra do
            :ring -> Store.new!(max_events: 8 * 32_768, overflow: :evict_oldest)
            _ -> Store.new!(max_events: expected() * 2 * pairs)
          end

        # A cap it never reaches: what counting every event against it costs.
        if extra == :rate_cap,
          do: :ok = ElixirScope.Native.store_set_rate_cap(Store.ref(store), 1 <<< 40, 1_000)

        if timeouts?, do: true = Tracer.mark_timeouts()
        for s <- servers, do: :ok = Tracer.trace_pid(s, store, @flags)
        store
      end,
      fn _ -> true end,
      fn store ->
        Tracer.unmark_timeouts()
        st = Store.stats(store)
        # A ring's events kept plus those it evicted: every one stored.
        %{stored: st.events + st.evicted, dropped: st.dropped, bytes: st.bytes}
      end,
      pairs
    )
  end

  # ElixirScope.watch on the server's handle_call/3 with a guard every call passes, printing
  # every call (N lines) to a device that discards them; done when the last line is printed.
  # Its peer is :dbg tracing the same calls, printing each (the loop's return trace is on for
  # both).
  # The watch joins a running capture (one it started itself would have its 50,000 events a
  # second cap, which this loop exceeds).
  defp elixir_scope_watch do
    run(
      fn [s] ->
        {:ok, _} = ElixirScope.start(max_events: expected() * 2)
        device = spawn(fn -> null_device(0, nil) end)

        {:ok, watch} =
          ElixirScope.watch("Bench.Server.handle_call({:inc, by}, _, n) when by > 0",
            limit: n(),
            time: 600_000,
            io: device
          )

        # The watch's capture traces calls in every process, the server's included.
        _ = s
        {device, watch}
      end,
      # The watch's first line, then one per call (or the watch stopped: no waiting forever).
      fn {device, watch} -> null_device_count(device) >= n() + 1 or not Process.alive?(watch) end,
      fn {device, watch} ->
        ref = Process.monitor(watch)
        ElixirScope.unwatch(watch)
        receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
        st = Store.stats(Store.default())
        # (less its first and last lines)
        printed = null_device_count(device) - 2
        ElixirScope.stop()
        Process.exit(device, :kill)
        %{stored: st.events, dropped: st.dropped, bytes: st.bytes, printed: printed}
      end
    )
  end

  # An io device that takes every request and answers :ok, counting the lines written.
  defp null_device(count, _) do
    receive do
      {:io_request, from, ref, req} ->
        send(from, {:io_reply, ref, :ok})
        null_device(count + lines(req), nil)

      {:count, from} ->
        send(from, {:count, count})
        null_device(count, nil)
    end
  end

  defp lines({:put_chars, _enc, chars}),
    do: chars |> IO.iodata_to_binary() |> :binary.matches("\n") |> length()

  defp lines(_format_request), do: 1

  defp null_device_count(device) do
    send(device, {:count, self()})
    receive do: ({:count, c} -> c)
  end

  # ElixirScope.flight_recorder/2 as it runs all day: its profile (load-aware), its crash
  # trigger armed (no crash happens), its governor ticking; only the server traced, as in the
  # other rows (the profile's `trace: [:all]` and rate cap left out). In memory (`:memory`):
  # its ring of 200,000 events, which the loop's 400,000 fill and go on evicting, its keeper
  # carrying states. On disk (`:disk`): its trace written under retention, its store big
  # enough not to go on in a fresh one while the loop runs; done when every event is on disk.
  defp elixir_scope_flight_recorder(mode) do
    in_tmp_dir(fn dir ->
      run(
        fn [s] ->
          opts = [trace: [], max_rate: nil, mode: mode]
          opts = if mode == :disk, do: [max_events: expected() * 4] ++ opts, else: opts
          {:ok, _} = ElixirScope.flight_recorder(dir, opts)
          :ok = Tracer.trace_pid(s, Store.default(), @flags)
          Store.default()
        end,
        fn store ->
          # Written now, as the persisted row's check does (not at the flusher's next tick).
          mode == :memory or
            (match?({:ok, _}, ElixirScope.flush()) and
               Store.stats(store).persisted >= expected())
        end,
        fn store ->
          st = Store.stats(store)
          ElixirScope.stop()
          %{stored: st.events + st.evicted, dropped: st.dropped, bytes: st.bytes}
        end
      )
    end)
  end

  # Runs `fun` with a fresh directory, removed afterwards.
  defp in_tmp_dir(fun) do
    dir = Path.join(System.tmp_dir!(), "escope-bench-#{System.unique_integer([:positive])}")

    try do
      fun.(dir)
    after
      File.rm_rf!(dir)
    end
  end

  # ElixirScope writing the capture to disk as it runs (a flusher every 100 ms, as
  # `persist:` does); done when every event is on disk.
  defp elixir_scope_persisted do
    in_tmp_dir(fn dir ->
      run(
        fn [s] ->
          store = Store.new!(max_events: expected() * 2)
          :ok = Persist.start(store, Persist.options!(dir: dir))
          flusher = spawn(fn -> flush_every(store, 100) end)
          :ok = Tracer.trace_pid(s, store, @flags)
          {store, flusher}
        end,
        fn {store, _} ->
          {:ok, on_disk} = Persist.flush(store)
          on_disk >= expected()
        end,
        fn {store, flusher} ->
          Process.exit(flusher, :kill)
          {:ok, _} = Persist.finish(store)
          st = Store.stats(store)
          %{stored: st.events, dropped: st.dropped, bytes: st.bytes}
        end
      )
    end)
  end

  defp flush_every(store, ms) do
    Process.sleep(ms)
    {:ok, _} = Persist.flush(store)
    flush_every(store, ms)
  end

  defp ets_tracer(tab, seq) do
    receive do
      msg ->
        :ets.insert(tab, {seq, System.monotonic_time(), msg})
        ets_tracer(tab, seq + 1)
    end
  end
end

# W2 and P3 (P3 runs W1's loop, so after Bench.Capture is defined).
Code.require_file("support/states.exs", __DIR__)
Code.require_file("support/overload.exs", __DIR__)

rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "5"))
parts = String.split(System.get_env("BENCH_PARTS", "W1,W2,P3"), ",")
# BENCH_ONLY=ElixirScope runs just that variant, or the variants whose name has that in it
# when none is named so (several, comma separated: "ElixirScope,ring"; plus the baselines,
# unless BENCH_SOLO=1), e.g. under a profiler.
only = System.get_env("BENCH_ONLY")

pick = fn variants ->
  names = Enum.map(variants, &elem(&1, 0))
  wanted = if only, do: String.split(only, ","), else: []
  exact = Enum.filter(wanted, &(&1 in names))

  Enum.filter(variants, fn {name, _} ->
    only == nil or name in exact or String.contains?(name, wanted -- exact) or
      (String.starts_with?(name, ["untraced", "no-op NIF tracer (floor)"]) and
         System.get_env("BENCH_SOLO") == nil)
  end)
end

n = Bench.Capture.n()

if "W1" in parts do
  Harness.header(
    "W1, the call loop: GenServer calls, N=#{n}, #{Bench.Capture.events_per_call()} events per call, #{rounds} rounds (median)"
  )

  for pairs <- [1, 2] do
    variants = pick.(Bench.Capture.variants(pairs))
    results = Harness.run(variants, rounds)
    calls = n * pairs
    events = calls * Bench.Capture.events_per_call()
    [{untraced, _}, {floor, _} | _] = Bench.Capture.variants(pairs)
    per_call = fn name -> results[name].median / n end
    base = if results[untraced], do: per_call.(untraced), else: 0.0
    floor_extra = if results[floor], do: per_call.(floor) - base, else: 1.0
    base_cpu = if results[untraced], do: results[untraced].cpu, else: 0

    rows =
      for {name, _} <- variants do
        r = results[name]
        pc = per_call.(name)
        extra = pc - base
        e = r.extra
        untraced? = name == untraced

        [
          name,
          Harness.f(pc),
          "#{Harness.f(r.min / n)}..#{Harness.f(r.max / n)}",
          if(untraced?, do: "-", else: Harness.f(extra)),
          if(untraced?,
            do: "-",
            else: Harness.f(extra * 1000 / Bench.Capture.events_per_call(), 0)
          ),
          Harness.f(r.cpu / calls),
          if(untraced?, do: "-", else: Harness.f((r.cpu - base_cpu) * 1000 / events, 0)),
          if(name in [untraced, floor],
            do: "-",
            else:
              "#{e[:stored]}/#{e[:dropped]}" <>
                if(e[:printed], do: " (#{e[:printed]} printed)", else: "")
          ),
          case e[:bytes] do
            nil -> "-"
            b -> "#{Harness.f(b / 1_048_576, 1)} MiB"
          end,
          if(untraced?, do: "-", else: Harness.f(extra / floor_extra) <> "x")
        ]
      end

    Harness.table(
      [
        "variant",
        "µs/call",
        "spread",
        "extra µs/call",
        "extra ns/event",
        "CPU µs/call",
        "extra CPU ns/event",
        "stored/dropped",
        "memory",
        "extra vs floor"
      ],
      rows
    )

    IO.puts("")
  end
end

if "W2" in parts, do: Bench.States.run(min(rounds, 3))
if "P3" in parts, do: Bench.Overload.run(min(rounds, 3))
