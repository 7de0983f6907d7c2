defmodule ElixirScope.PersistTest do
  # Traces written to disk and opened again answer every query as the store they came from.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase
  require ElixirScope.Query

  @moduletag :capture_log

  alias ElixirScope.{Persist, Query, Replay, Store}

  doctest ElixirScope.Persist

  defmodule Counter do
    use GenServer
    def start_link(n), do: GenServer.start_link(__MODULE__, n)
    def init(n), do: {:ok, %{count: n, seen: []}}
    def handle_call({:add, k}, _from, s), do: {:reply, s.count + k, %{s | count: s.count + k}}
    def handle_call(:crash, _from, _s), do: raise(ArgumentError, "boom")
    def handle_cast({:note, x}, s), do: {:noreply, %{s | seen: [x | s.seen]}}
    def handle_info(_msg, s), do: {:noreply, s}
  end

  setup do
    %{dir: temp_path("escope-persist")}
  end

  # A supervised counter traced with states, called, crashed and restarted; returns the store
  # and the pids involved.
  defp child(sup) do
    [{Counter, pid, :worker, _}] = Supervisor.which_children(sup)
    pid
  end

  def workload(store) do
    {:ok, sup} = Supervisor.start_link([{Counter, 0}], strategy: :one_for_one)
    Process.unlink(sup)
    on_exit(fn -> Process.exit(sup, :kill) end)
    counter = child(sup)
    trace_states_into(sup, store)
    trace_states_into(counter, store)

    for k <- 1..30 do
      GenServer.call(counter, {:add, k})
      GenServer.cast(counter, {:note, {:n, k, "text #{k}", [k, k * 1.5]}})
    end

    send(counter, {:info, self()})
    catch_exit(GenServer.call(counter, :crash))
    wait_until(fn -> is_pid(child(sup)) and child(sup) != counter end)
    GenServer.call(child(sup), {:add, 100})
    {sup, counter}
  end

  test "an opened trace is read-only: no capture settings, nothing to set", %{dir: dir} do
    live = new_store()
    workload(live)
    {:ok, saved} = Persist.save(live, dir)
    {:ok, disk} = ElixirScope.open(dir)

    assert %{events: ^saved, tracing_level: :off, sample_rate: 1.0, persisted: 0} =
             Store.stats(disk)

    assert_raise ArgumentError, ~r/trace read from disk: it captures nothing/, fn ->
      Store.set_level(disk, :full)
    end

    assert_raise ArgumentError, ~r/trace read from disk/, fn -> Store.set_sampling(disk, 0.5) end
    assert Store.close(disk) == :ok
    assert length(Query.events(store: disk)) == saved
    # A capture's store still takes them.
    assert Store.set_level(live, :messages_only) == :ok
    assert Store.stats(live).tracing_level == :messages_only
  end

  test "a saved store opens with the same answers to every query", %{dir: dir} do
    live = new_store()
    {sup, counter} = workload(live)
    {:ok, saved} = Persist.save(live, dir)
    assert saved == Store.stats(live).events
    {:ok, disk} = ElixirScope.open(dir)

    all = events(live)
    assert Store.stats(disk).events == length(all)
    info = Persist.info(disk)
    # Opened paged: the queries below read the events they need from disk as they go.
    assert %{events: n, first_seq: 1, gaps: 0, torn: [], dropped: 0, paged: 1} = info
    assert n == length(all)

    same = fn fun -> assert fun.(disk) == fun.(live) end
    times = all |> Enum.take_every(7) |> Enum.map(& &1.ts)

    for t <- times do
      same.(&Query.state_at(counter, t, store: &1))
      same.(&Query.pending_messages_at(counter, t, store: &1))
      same.(&Query.call_stack_at(counter, t, store: &1))
      same.(&Query.active_processes_at(t, store: &1))
      same.(&Query.states_at(t, store: &1))
      same.(&Query.system_snapshot_at(t, store: &1))
      same.(&Query.supervision_tree_at(t, store: &1))
    end

    same.(&Query.timeline(counter, store: &1))
    same.(&Query.state_timeline(counter, store: &1))
    same.(&Query.messages_to(counter, store: &1))
    same.(&Query.message_flow(self(), counter, store: &1))
    same.(&Query.function_calls(Counter, :handle_call, store: &1))
    same.(&Query.module_function_calls(Counter, store: &1))
    same.(&Query.why_crashed(counter, store: &1))
    same.(&Query.key_changes(counter, :count, store: &1))
    same.(&Query.supervisor_events(sup, store: &1))
    same.(&Query.events(kind: :receive, pid: counter, limit: 5, order: :desc, store: &1))
    same.(&Query.count(kind: :state, store: &1))
    same.(&Query.group_by([store: &1], :kind))

    same.(fn s ->
      Query.query(message: {:"$gen_cast", {:note, {:n, k, _, _}}} when k > 25, store: s)
    end)

    same.(&Query.find(message: "{:info, pid} when is_pid(pid)", store: &1))
    same.(&Query.count(state: "%{count: c} when c > 100", store: &1))

    same.(fn store ->
      {:ok, cursor} = Replay.open(:start, pid: counter, store: store)
      {:ok, cursor} = Replay.next(cursor)
      {:ok, cursor} = Replay.next(cursor)
      {:ok, back} = Replay.prev(cursor)
      {Replay.view(cursor), Replay.event(back)}
    end)

    assert events(disk) == all
  end

  test "retention keeps the newest segments, and what is left answers queries", %{dir: dir} do
    store = new_store()
    {:ok, c} = GenServer.start(Counter, 0)
    trace_states_into(c, store)

    :ok =
      Persist.start(
        store,
        Persist.options!(dir: dir, segment_bytes: 1_024, max_bytes: 4_096)
      )

    for k <- 1..200 do
      GenServer.call(c, {:add, k})
      if rem(k, 20) == 0, do: {:ok, _} = Persist.flush(store)
    end

    {:ok, _} = Persist.finish(store)
    {:ok, disk} = ElixirScope.open(dir)
    info = Persist.info(disk)
    assert info.first_seq > 1 and info.gaps == 0
    total = Store.stats(store).events
    assert info.first_seq + info.events - 1 == total
    kept = events(disk)
    # The same events as the live store's newest, with the same seqs: a seq names an event live,
    # opened and in the summary alike.
    live = events(store, after_seq: info.first_seq - 1)
    assert shape(kept) == shape(live)
    assert Enum.map(kept, & &1.seq) == Enum.map(live, & &1.seq)
    refute info.renumbered
    # The store counts its events, not its last seq.
    assert Store.stats(disk).events == info.events
    {:ok, summary} = Persist.summary(dir)
    assert elem(summary.first, 0) == info.first_seq and elem(summary.last, 0) == total
    assert {:ok, %{count: 20_100}} = Query.state_at(c, :now, store: disk)
    assert {:ok, %{count: 20_100}} = Query.state_at(c, {:seq, total}, store: disk)

    # One segment file alone, loaded whole: its own seqs too.
    [seg | _] = Path.wildcard(Path.join(dir, "*.seg"))
    {:ok, one} = ElixirScope.open(seg)
    [first | _] = events(one)
    assert first.seq == Persist.info(one).first_seq and first.seq >= info.first_seq
    assert shape([first]) == shape(events(store, after_seq: first.seq - 1, limit: 1))
  end

  # A trace of a Counter over several segments, sealed; its events as the live store has them.
  defp segmented_trace(dir, calls) do
    store = new_store()
    {:ok, c} = GenServer.start(Counter, 0)
    trace_states_into(c, store)
    :ok = Persist.start(store, Persist.options!(dir: dir, segment_bytes: 2_048))

    for k <- 1..calls do
      GenServer.call(c, {:add, k})
      if rem(k, 10) == 0, do: {:ok, _} = Persist.flush(store)
    end

    {:ok, _} = Persist.finish(store)
    {events(store), dir |> Path.join("*.seg") |> Path.wildcard() |> Enum.sort()}
  end

  test "a damaged or lost MANIFEST is rebuilt from the segments", %{dir: dir} do
    {all, _segments} = segmented_trace(dir, 100)
    manifest = Path.join(dir, "MANIFEST")

    for damage <- [
          fn -> File.write!(manifest, "garbage") end,
          fn -> File.write!(manifest, "") end,
          fn -> File.rm!(manifest) end
        ] do
      damage.()
      assert {:ok, disk} = ElixirScope.open(dir)
      info = Persist.info(disk)
      assert info.manifest_rebuilt and info.damaged == [] and info.gaps == 0
      assert events(disk) == all
    end
  end

  test "a lost, empty or foreign segment costs its own events, and is named", %{dir: dir} do
    {all, segments} = segmented_trace(dir, 100)
    assert length(segments) > 4
    [_, second, third, fourth | _] = segments

    seqs_of = fn file ->
      {:ok, one} = ElixirScope.open(file)
      Enum.map(events(one), & &1.seq)
    end

    {lost, emptied, copied_over} = {seqs_of.(second), seqs_of.(third), seqs_of.(fourth)}
    File.rm!(second)
    File.write!(third, "")
    # A copy of another segment of the same trace in fourth's place: loading it would repeat
    # the first segment's events.
    File.cp!(hd(segments), fourth)

    assert {:ok, disk} = ElixirScope.open(dir)
    info = Persist.info(disk)
    assert Enum.sort(info.damaged) == Enum.map([second, third, fourth], &Path.basename/1)
    got = events(disk)
    # No event twice, and exactly the others.
    assert Enum.map(got, & &1.seq) == Enum.uniq(Enum.map(got, & &1.seq))
    gone = MapSet.new(lost ++ emptied ++ copied_over)
    # The others keep their seqs (the lost ones are holes).
    assert got == Enum.reject(all, &(&1.seq in gone))
    refute info.renumbered
    # The summary counts what loading loads: the copy is not counted twice.
    {:ok, summary} = Persist.summary(dir)
    assert summary.events == length(got)
    assert Enum.sort(summary.damaged) == Enum.map([second, third, fourth], &Path.basename/1)

    out = ExUnit.CaptureIO.capture_io(fn -> Mix.Tasks.ElixirScope.Inspect.run([dir]) end)
    assert out =~ "segments not counted (unreadable, or repeating others): "
    assert out =~ Path.basename(fourth)
    assert info.gaps == MapSet.size(gone)

    # Nothing readable at all: an error naming what was wrong.
    Enum.each(segments, &File.write!(&1, ""))
    assert {:error, {:not_a_trace, _}} = ElixirScope.open(dir)
  end

  test "a damaged block of a paged trace is counted and named once queries read it",
       %{dir: dir} do
    {all, [_, second | _]} = segmented_trace(dir, 100)
    bytes = File.read!(second)
    at = div(byte_size(bytes), 2)
    <<head::binary-size(at), b, rest::binary>> = bytes
    File.write!(second, <<head::binary, Bitwise.bxor(b, 0xFF), rest::binary>>)

    {:ok, disk} = ElixirScope.open(dir)
    assert Persist.info(disk).paged > 0
    assert %{unread: 0, damaged: []} = Persist.info(disk)
    got = events(disk)
    info = Persist.info(disk)
    # What could not be read back is said, in number and file: nothing is quietly missing.
    assert info.unread > 0 and info.damaged == [Path.basename(second)]
    assert length(got) + info.unread == length(all)
    assert Enum.all?(got, &(&1 in all))
  end

  test "terms foreign to the reading VM come back without creating atoms", %{dir: dir} do
    # A trace written by another VM, whose module and message atoms this VM never saw.
    script = """
    defmodule Unseen.Module#{:erlang.unique_integer([:positive])} do
      use GenServer
      def init(_), do: {:ok, :brand_new_state_atom_xyzzy}
      def handle_call(m, _f, s), do: {:reply, m, s}
    end
    [mod] = for {m, _} <- :code.all_loaded(), match?("Elixir.Unseen.Module" <> _, Atom.to_string(m)), do: m
    {:ok, _} = ElixirScope.start()
    {:ok, pid} = GenServer.start(mod, nil)
    :ok = ElixirScope.trace(pid)
    GenServer.call(pid, {:never_seen_tag_plugh, 1})
    {:ok, _} = ElixirScope.save(System.argv() |> hd())
    """

    # A named node: its name is an atom this VM does not have either.
    child = "escope_child_#{System.unique_integer([:positive])}"
    run_elixir!(["--sname", child], script, [dir])
    {:ok, disk} = ElixirScope.open(dir)
    refute Persist.info(disk).foreign == 0
    states = events(disk, kind: :state)
    assert Enum.all?(states, &(&1.data == "brand_new_state_atom_xyzzy"))
    assert {mod, :handle_call, 3} = List.last(states).mfa
    assert is_binary(mod) and String.starts_with?(mod, "Elixir.Unseen.Module")
    [call] = events(disk, kind: :call, limit: 1)
    assert [{"never_seen_tag_plugh", 1}, {caller, _}, _] = call.data

    # The child's processes are still pids, of a stand-in node named after the real one.
    assert is_pid(call.pid) and is_pid(caller)
    stand_in = node(call.pid)
    assert node(caller) == stand_in and stand_in != node()
    assert String.starts_with?(Persist.nodes()[stand_in], child <> "@")
    # ... which queries take back.
    assert Query.timeline(call.pid, store: disk) == events(disk, pid: call.pid)
    assert {:ok, "brand_new_state_atom_xyzzy"} = Query.state_at(call.pid, :now, store: disk)
    # Native content filters still see the atoms by name.
    assert Query.count(message: "{:\"$gen_call\", _, {_, 1}}", store: disk) == 1
    assert_raise ArgumentError, fn -> String.to_existing_atom("never_seen_tag_plugh") end
  end

  test "mix elixir_scope.inspect summarizes a trace", %{dir: dir} do
    live = new_store()
    {_sup, counter} = workload(live)
    {:ok, n} = Persist.save(live, dir)
    calls = Query.count(kind: :call, store: live)

    out =
      ExUnit.CaptureIO.capture_io(fn -> Mix.Tasks.ElixirScope.Inspect.run([dir, "--top", "1"]) end)

    assert out =~ ~r/events\s+#{n}\n/
    assert out =~ ~r/call\s+#{calls}\n/
    assert out =~ "segments   1,"
    refute out =~ "read through"
    assert out =~ "busiest processes\n  #{inspect(counter)}"
    assert out =~ ~r/most called\n  ElixirScope.PersistTest.Counter.handle_call\/3\s+\d+/
    assert out =~ "dropped    0 events"

    assert_raise Mix.Error, ~r/cannot open .*no MANIFEST/, fn ->
      File.mkdir_p!(Path.join(dir, "empty"))
      Mix.Tasks.ElixirScope.Inspect.run([Path.join(dir, "empty")])
    end

    assert_raise Mix.Error, ~r/usage/, fn -> Mix.Tasks.ElixirScope.Inspect.run([]) end

    assert_raise Mix.Error, ~r/usage/, fn ->
      Mix.Tasks.ElixirScope.Inspect.run([dir, "--top", "-3"])
    end
  end

  test "an opened trace saved again keeps its events, clock and times", %{dir: dir} do
    live = new_store()
    {_sup, _counter} = workload(live)
    {:ok, _} = Persist.save(live, dir)
    {:ok, disk} = ElixirScope.open(dir)
    again_dir = dir <> "-again"
    on_exit(fn -> File.rm_rf!(again_dir) end)
    {:ok, _} = Persist.save(disk, again_dir)
    {:ok, again} = ElixirScope.open(again_dir)
    assert events(again) == events(disk)
    assert Persist.info(again).clock == Persist.info(disk).clock
    [e | _] = events(again)
    assert Store.to_datetime(again, e.ts) == Store.to_datetime(disk, e.ts)
  end

  test "a time window opens with its events and each state at its start", %{dir: dir} do
    live = new_store()
    {_sup, counter} = workload(live)
    {:ok, _} = Persist.save(live, dir)
    all = events(live)
    from = Enum.at(all, div(length(all), 3)).ts
    to = Enum.at(all, div(2 * length(all), 3)).ts
    {:ok, disk} = ElixirScope.open(dir, since: from, until: to)
    info = Persist.info(disk)
    assert info.carried > 0 and info.skipped > 0
    inside = Enum.filter(all, &(&1.ts >= from and &1.ts <= to))
    got = events(disk)
    # Each process's state at the window's start, then the window.
    {carried, window} = Enum.split(got, info.carried)
    assert Enum.all?(carried, &(&1.kind == :state and &1.ts < from))
    assert shape(window) == shape(inside) |> Enum.take(length(window))
    assert length(window) + info.discarded == length(inside)
    # States anywhere in the window are what the live store says.
    for t <- [from, div(from + to, 2), to] do
      assert Query.state_at(counter, t, store: disk) == Query.state_at(counter, t, store: live)
    end

    # The same window by wall-clock time (DateTimes hold microseconds: the edges may move by
    # an event or two).
    {:ok, by_date} =
      ElixirScope.open(dir,
        since: Store.to_datetime(disk, from),
        until: Store.to_datetime(disk, to)
      )

    assert abs(length(events(by_date)) - length(got)) <= 4
    mid = div(from + to, 2)

    assert Query.state_at(counter, mid, store: by_date) ==
             Query.state_at(counter, mid, store: live)

    assert_raise ArgumentError, ~r/since/, fn -> ElixirScope.open(dir, since: :yesterday) end

    assert_raise ArgumentError, ~r/:until .* is before :since/, fn ->
      ElixirScope.open(dir, since: to, until: from)
    end

    # Far beyond the capture's clock: everything.
    {:ok, all_of_it} = ElixirScope.open(dir, since: -(2 ** 70), until: ~U[9999-01-01 00:00:00Z])
    assert length(events(all_of_it)) == length(all)
  end

  test "a summary from footers says what the opened trace holds, without loading it",
       %{dir: dir} do
    store = new_store()
    {_sup, counter} = workload(store)
    o = Persist.options!(dir: dir, segment_bytes: 2_048, flush_interval: 10)
    :ok = Persist.start(store, o)
    {:ok, _} = Persist.flush(store)
    # Still running: sealed segments have footers, the last is read through.
    {:ok, live} = Persist.summary(dir)
    assert live.from_footers == live.segments - 1
    {:ok, scanned} = Persist.summary(dir, footers: false)
    assert scanned.from_footers == 0
    assert Map.delete(scanned, :from_footers) == Map.delete(live, :from_footers)
    {:ok, n} = Persist.finish(store)
    {:ok, s} = Persist.summary(dir)
    assert s.from_footers == s.segments and s.events == n

    {:ok, disk} = ElixirScope.open(dir)
    all = events(disk)
    assert s.events == length(all)
    assert s.first == {1, hd(all).ts} and s.last == {n, List.last(all).ts}
    assert s.kinds == Query.group_by([store: disk], :kind)
    assert s.pids == Query.group_by([store: disk], :pid)
    assert s.pids[counter] == length(Query.timeline(counter, store: disk))
    assert s.calls == Query.group_by([store: disk, kind: :call], :mfa)

    assert s.tags ==
             Query.group_by([store: disk, kind: [:send, :receive, :send_to_dead]], :tag)
             |> Map.delete(nil)

    assert s.state_changes > 0 and s.state_changes <= s.kinds.state
  end

  test "retention by age keeps the newest segments (real monotonic times)", %{dir: dir} do
    store = new_store()
    {:ok, c} = GenServer.start(Counter, 0)
    trace_states_into(c, store)
    :ok = Persist.start(store, Persist.options!(dir: dir, segment_bytes: 1_024, max_age: 1))
    for k <- 1..50, do: GenServer.call(c, {:add, k})
    {:ok, _} = Persist.flush(store)
    old = Store.stats(store).events
    Process.sleep(1_100)
    for k <- 1..200, do: GenServer.call(c, {:add, k})
    {:ok, _} = Persist.finish(store)
    {:ok, disk} = ElixirScope.open(dir)
    info = Persist.info(disk)
    # Everything captured before the pause is over a second older than the newest event: all
    # of it is gone but what shares a segment with the first events after the pause.
    assert info.first_seq > old - 20 and info.first_seq > 1
    assert info.first_seq + info.events - 1 == Store.stats(store).events
    assert {:ok, %{count: 21_375}} = Query.state_at(c, :now, store: disk)
  end

  test "a payload that is not a term, behind a matching checksum, comes back as its bytes",
       %{dir: dir} do
    store = new_store()
    pid = spawn_waiting(fn -> send(self(), {:marker, 424_242}) end)
    trace_into(pid, store)
    go_and_wait(pid)
    {:ok, _} = Persist.save(store, dir)
    [file] = Path.wildcard(Path.join(dir, "*.seg"))
    # 424_242 as INTEGER_EXT becomes a big integer claiming 400 k digits it does not have; the
    # frame's CRC is fixed to match.
    int = <<98, 424_242::32>>
    bad = <<111, 424_242::32>>
    <<head::binary-size(12), frames::binary>> = File.read!(file)
    File.write!(file, head <> refit(frames, int, bad))

    {:ok, disk} = ElixirScope.open(dir)

    assert [%ElixirScope.Event{data: %ElixirScope.Event.Undecodable{bytes: bytes}}] =
             events(disk, kind: :send)

    assert :binary.match(bytes, bad) != :nomatch
    # Queries over it still work.
    assert length(events(disk)) == length(events(store))
  end

  # The frames with `from` replaced by `to` inside their record, their CRCs recomputed.
  defp refit(<<>>, _from, _to), do: <<>>

  defp refit(<<len::little-32, _crc::little-32, body::binary-size(len), rest::binary>>, from, to) do
    body = :binary.replace(body, from, to)

    <<byte_size(body)::little-32, :erlang.crc32(body)::little-32, body::binary,
      refit(rest, from, to)::binary>>
  end

  # A FIFO opened for reading blocks until a writer comes: in a dirty I/O NIF that is forever.
  # Each call is bounded here, so a regression fails instead of hanging the suite.
  test "FIFOs anywhere in a trace are refused at once, never read", %{dir: dir} do
    File.mkdir_p!(dir)
    fifo = Path.join(dir, "a_fifo")
    {_, 0} = System.cmd("mkfifo", [fifo])
    bounded = fn fun -> Task.async(fun) |> Task.yield(5_000) || flunk("blocked on a FIFO") end

    assert bounded.(fn -> ElixirScope.open(fifo) end) ==
             {:ok, {:error, {:not_a_regular_file, fifo}}}

    assert {:ok, {:error, {:not_a_regular_file, ^fifo}}} =
             bounded.(fn -> Persist.summary(fifo) end)

    # A trace whose MANIFEST is a FIFO.
    trace = Path.join(dir, "trace")
    File.mkdir_p!(trace)
    {_, 0} = System.cmd("mkfifo", [Path.join(trace, "MANIFEST")])
    manifest = Path.join(trace, "MANIFEST")

    assert bounded.(fn -> ElixirScope.open(trace) end) ==
             {:ok, {:error, {:not_a_regular_file, manifest}}}

    # Writing into it: refused as a trace already there, without reading the FIFO.
    assert bounded.(fn -> ElixirScope.start(persist: [dir: trace]) end) ==
             {:ok, {:error, {:trace_exists, trace}}}

    # A trace whose segment is a FIFO: the segment is refused, not waited for.
    good = Path.join(dir, "good")
    {:ok, _} = Persist.save(new_store(), good)
    [seg | _] = Path.wildcard(Path.join(good, "*.seg"))
    File.rm!(seg)
    {_, 0} = System.cmd("mkfifo", [seg])
    assert {:ok, result} = bounded.(fn -> ElixirScope.open(good) end)
    assert match?({:error, {:not_a_regular_file, ^seg}}, result) or match?({:ok, _}, result)
    assert {:ok, _} = bounded.(fn -> Persist.summary(good) end)
  end

  test "bad paths and bad files are errors a program can match, naming the file",
       %{dir: dir} do
    missing = Path.join(dir, "missing")
    assert ElixirScope.open(missing) == {:error, {:enoent, missing}}
    File.mkdir_p!(dir)
    assert ElixirScope.open(dir) == {:error, {:not_a_trace, dir}}
    manifest = Path.join(dir, "MANIFEST")
    File.write!(manifest, "garbage")
    assert ElixirScope.open(dir) == {:error, {:not_a_trace, manifest}}
    bad = Path.join(dir, "x.seg")
    File.write!(bad, "ESCOPESG" <> <<3::little-32>>)
    assert ElixirScope.open(bad) == {:error, {:newer_format, bad, 3}}
    assert ElixirScope.Error.describe({:newer_format, "x.seg", 3}) =~ "upgrade ElixirScope"
    File.write!(bad, :crypto.strong_rand_bytes(1000))
    assert ElixirScope.open(bad) == {:error, {:not_a_trace, bad}}
    # A summary of nothing readable is an error too, not an empty summary.
    assert Persist.summary(bad) == {:error, {:not_a_trace, bad}}
    assert Persist.save(new_store(), dir) == {:error, {:trace_exists, dir}}
    assert ElixirScope.Error.describe({:trace_exists, dir}) =~ "already holds a trace"

    assert_raise ArgumentError, ~r/persist :dir/, fn -> ElixirScope.start(persist: [dir: 1]) end

    assert_raise ArgumentError, ~r/segment_bytes/, fn ->
      ElixirScope.start(persist: [dir: dir, segment_bytes: 0])
    end
  end

  # Runs `script` in a separate BEAM with this build's code path; returns its output.
  defp run_elixir!(erl_args, script, args) do
    file = temp_path("escope-script") <> ".exs"
    File.write!(file, script)
    on_exit(fn -> File.rm(file) end)
    {out, status} = run_beam(erl_args, file, args)
    assert status == 0, out
    out
  end
end

defmodule ElixirScope.PersistCaptureTest do
  # Persistence of the global capture (ElixirScope.start/1), so not async.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  @moduletag :capture_log

  alias ElixirScope.{Persist, Query, Store}

  defmodule Tracked do
    use ElixirScope.Track

    @scope true
    def work(a) do
      b = a * 2
      c = for x <- [a, b], do: x + 1
      {b, c}
    end
  end

  setup do
    %{dir: temp_path("escope-persist")}
  end

  test "a capture persisted while it runs: rotation, archive, retention, sealed at stop",
       %{dir: dir} do
    {:ok, _} =
      ElixirScope.start(
        persist: [dir: dir, segment_bytes: 2_048, archive: true, flush_interval: 10]
      )

    on_exit(fn -> ElixirScope.stop() end)
    store = Store.default()
    {_sup, counter} = ElixirScope.PersistTest.workload(store)
    # Written while capture runs, before anything is sealed.
    wait_until(fn -> length(Path.wildcard(Path.join(dir, "*.lz4"))) > 2 end)
    wait_until(fn -> ElixirScope.status().persisted > 0 end)
    status = ElixirScope.status()
    assert status.persist_dir == Path.expand(dir)
    assert status.persisted <= status.events
    :ok = ElixirScope.stop()
    {:ok, disk} = ElixirScope.open(dir)
    assert events(disk) == events(store)
    assert Persist.info(disk).segments > 3

    assert Query.state_timeline(counter, store: disk) ==
             Query.state_timeline(counter, store: store)

    # Sealed: a new capture cannot write into it, and the message says what to do.
    assert ElixirScope.start(persist: [dir: dir]) == {:error, {:trace_exists, dir}}
    refute ElixirScope.running?()
  end

  test "a persisted capture goes on in fresh stores past its memory budget", %{dir: dir} do
    {:ok, _} =
      ElixirScope.start(
        max_events: 4_000,
        tracing_level: :messages_only,
        persist: [dir: dir, flush_interval: 5]
      )

    on_exit(fn -> ElixirScope.stop() end)
    # A level set while capturing carries over to the next stores.
    :ok = ElixirScope.set_level(:full)
    {:ok, c} = GenServer.start(ElixirScope.PersistTest.Counter, 0)
    :ok = ElixirScope.trace(c)
    first_store = Store.default()

    # About 200 events every 20 ms: a store of 4,000 switches at 2,000, with room for ten
    # batches more while the server switches (busy machines switch slowly).
    for _batch <- 1..60 do
      for _ <- 1..40, do: GenServer.call(c, {:add, 1})
      Process.sleep(20)
    end

    assert ElixirScope.status().generation > 1
    assert ElixirScope.status().tracing_level == :full
    assert Store.default() != first_store
    # The current store holds the last stretch only (what queries read by default), and
    # `store: :trace` reads every event the capture wrote, from disk where its memory no longer
    # has them: all of them once what is pending is written.
    current = Query.state_timeline(c)
    assert current == Query.state_timeline(c, store: Store.default())
    assert length(current) < 2_000
    {:ok, ^dir} = ElixirScope.flush()
    live = Query.state_timeline(c, store: :trace)
    assert List.last(live).data.count == 2400

    assert Enum.take(live, -length(current)) |> Enum.map(& &1.data) ==
             Enum.map(current, & &1.data)

    # Opened apart, what it has written says the same, with the running VM's own pids.
    {:ok, all} = ElixirScope.open_persisted()
    whole = Query.state_timeline(c, store: all)
    assert whole == live
    # Saved while it runs, the capture writes all of it too, not its current store alone.
    copy = temp_path("escope-persist-copy")
    {:ok, _} = ElixirScope.save(copy)
    {:ok, saved} = ElixirScope.open(copy)
    assert Query.state_timeline(c, store: saved) == live

    assert Query.state_at(c, hd(tl(whole)).ts, store: :trace) ==
             Query.state_at(c, hd(tl(whole)).ts, store: all)

    # Only the recent past: the state at its start, then the last call's, whatever store they
    # were in.
    last_call = List.last(whole).ts
    {:ok, recent} = ElixirScope.open_persisted(since: last_call - 1)

    assert [%{data: %{count: 2399}}, %{data: %{count: 2400}}] =
             Query.state_timeline(c, store: recent)

    generations = ElixirScope.status().generation
    :ok = ElixirScope.stop()
    assert {:error, :not_running} = ElixirScope.open_persisted()

    {:ok, disk} = ElixirScope.open(dir)
    info = Persist.info(disk)
    assert info.first_seq == 1 and info.gaps == 0
    assert info.events > 8_000, "more than the 4,000 a store holds"
    assert info.dropped == 0
    # Every call's state, in order: moving processes between stores may miss an event or two
    # per switch, nothing else.
    counts = Query.state_timeline(c, store: disk) |> Enum.map(& &1.data.count)
    assert counts == Enum.sort(Enum.uniq(counts))
    assert hd(counts) == 0 and List.last(counts) == 2400
    assert length(counts) >= 2401 - 2 * generations
  end

  # Reads the counter's states over and over until told to stop, checking that each answer
  # holds the one before it; reports how many it read and the last count seen.
  defp read_loop(c, parent, reads, last) do
    receive do
      :stop -> send(parent, {:read, self(), reads, last})
    after
      0 ->
        timeline = Query.state_timeline(c, store: :trace)
        counts = Enum.map(timeline, & &1.data.count)
        # From the first state on (count 0, long gone from memory), in order, none twice.
        true = counts == Enum.sort(Enum.uniq(counts))
        now = List.last(counts, 0)
        true = now >= last

        with [first | _] <- timeline do
          {0, {:ok, %{count: 0}}} = {first.data.count, Query.state_at(c, first.ts, store: :trace)}
        end

        read_loop(c, parent, reads + 1, now)
    end
  end

  test "states keep being recorded across store switches while another tool holds a callback's pattern",
       %{dir: dir} do
    {:ok, _} = ElixirScope.start(max_events: 400, persist: [dir: dir, flush_interval: 5])
    on_exit(fn -> ElixirScope.stop() end)
    {:ok, c} = GenServer.start(ElixirScope.PersistTest.Counter, 0)
    :ok = ElixirScope.trace(c)
    # :dbg takes handle_cast's pattern; handle_call's stays ElixirScope's.
    {:ok, _} = :dbg.tracer(:process, {fn _, n -> n end, 0})

    on_exit(fn ->
      :dbg.ctp()
      :dbg.stop()
    end)

    {:ok, _} = :dbg.tpl(ElixirScope.PersistTest.Counter, :handle_cast, 2, [])

    for _ <- 1..300 do
      GenServer.call(c, {:add, 1})
      Process.sleep(1)
    end

    assert ElixirScope.status().generation > 2

    # Every call's state is there, from before and after the switches.
    {:ok, _} = ElixirScope.flush()
    counts = Query.state_timeline(c, store: :trace) |> Enum.map(& &1.data.count)
    assert List.last(counts) == 300
    assert length(counts) >= 301 - 2 * ElixirScope.status().generation
  end

  test "queries of a running persisted capture never go back, across switches and fresh readers",
       %{dir: dir} do
    # A tiny budget for reading the trace back: queries start over with a fresh reader often.
    # (Given by the option's earlier name, `history_bytes`, still taken for `follow_bytes`.)
    {:ok, _} =
      ElixirScope.start(
        max_events: 2_000,
        persist: [dir: dir, flush_interval: 5, segment_bytes: 32 * 1024, history_bytes: 1]
      )

    on_exit(fn -> ElixirScope.stop() end)
    {:ok, c} = GenServer.start(ElixirScope.PersistTest.Counter, 0)
    :ok = ElixirScope.trace(c)
    Query.state_timeline(c, store: :trace)
    {_, first_reader, _, _} = :persistent_term.get({Persist, :follower})
    me = self()
    readers = for _ <- 1..2, do: spawn_link(fn -> read_loop(c, me, 0, 0) end)

    for _batch <- 1..30 do
      for _ <- 1..50, do: GenServer.call(c, {:add, 1})
      Process.sleep(10)
    end

    results =
      for r <- readers do
        send(r, :stop)
        assert_receive {:read, ^r, reads, last}, 30_000
        {reads, last}
      end

    assert Enum.all?(results, fn {reads, _} -> reads > 3 end)
    assert ElixirScope.status().generation > 2
    {_, reader, _, _} = :persistent_term.get({Persist, :follower})
    assert reader != first_reader, "the reader started over"
    # Every call's state, from the trace: moving processes between stores may miss an event
    # or two per switch, nothing else.
    {:ok, _} = ElixirScope.flush()
    counts = Query.state_timeline(c, store: :trace) |> Enum.map(& &1.data.count)
    assert hd(counts) == 0 and List.last(counts) == 1500
    assert counts == Enum.sort(Enum.uniq(counts))
    assert length(counts) >= 1501 - 2 * ElixirScope.status().generation
  end

  test "an opened trace can become the default store, but not while a capture runs",
       %{dir: dir} do
    {:ok, _} = ElixirScope.start()
    on_exit(fn -> ElixirScope.stop() end)
    {:ok, _} = ElixirScope.save(dir)
    assert ElixirScope.open(dir, default: true) == {:error, :already_running}
    :ok = ElixirScope.stop()
    {:ok, disk} = ElixirScope.open(dir, default: true)
    assert Store.default() == disk
    assert ElixirScope.status().events == Store.stats(disk).events
  end

  test "when the trace can no longer be written, the capture goes on and queries read memory",
       %{dir: dir} do
    {:ok, _} = ElixirScope.start(persist: [dir: dir, flush_interval: 5])
    on_exit(fn -> ElixirScope.stop() end)
    {:ok, c} = GenServer.start(ElixirScope.PersistTest.Counter, 0)
    :ok = ElixirScope.trace(c)
    for _ <- 1..10, do: GenServer.call(c, {:add, 1})
    assert List.last(Query.state_timeline(c)).data.count == 10
    assert ElixirScope.status().persist_dir == dir
    # The directory goes away under the writer: its next manifest cannot be saved. (The writer
    # may add a file while it is being removed: removed again then.)
    wait_until(fn -> match?({:ok, _}, File.rm_rf(dir)) end)
    for _ <- 1..10, do: GenServer.call(c, {:add, 1})
    wait_until(fn -> ElixirScope.status().persist_dir == nil end)
    assert ElixirScope.running?()
    GenServer.call(c, {:add, 1})
    assert %{data: %{count: 21}} = List.last(Query.state_timeline(c))
    assert Enum.map(Query.state_timeline(c), & &1.data.count) == Enum.to_list(0..21)
  end

  test "open_persisted/0, flush/0 and store: :trace need a persisted capture" do
    {:ok, _} = ElixirScope.start()
    on_exit(fn -> ElixirScope.stop() end)
    assert {:error, :not_persisted} = ElixirScope.open_persisted()
    assert {:error, :not_persisted} = ElixirScope.flush()

    assert_raise ArgumentError,
                 ~r/store: :trace reads the trace a running capture persists/,
                 fn ->
                   Query.events(store: :trace)
                 end
  end

  test "a query only reads: the server writes, every flush_interval or on flush/0", %{dir: dir} do
    {:ok, _} = ElixirScope.start(persist: [dir: dir, flush_interval: 60_000])
    on_exit(fn -> ElixirScope.stop() end)
    {:ok, c} = GenServer.start(ElixirScope.PersistTest.Counter, 0)
    :ok = ElixirScope.trace(c)
    for _ <- 1..5, do: GenServer.call(c, {:add, 1})
    # (The flusher's first write comes a whole interval after the start.)
    assert [_ | _] = Query.state_timeline(c)
    assert [] = Query.state_timeline(c, store: :trace)
    assert ElixirScope.status().persisted == 0
    {:ok, ^dir} = ElixirScope.flush()
    assert ElixirScope.status().persisted > 0
    assert Query.state_timeline(c, store: :trace) == Query.state_timeline(c)
  end

  test "tracked variables survive a save and open", %{dir: dir} do
    {:ok, _} = ElixirScope.start()
    on_exit(fn -> ElixirScope.stop() end)
    for a <- 1..5, do: Tracked.work(a)
    live = Store.default()
    {:ok, _} = ElixirScope.save(dir)
    {:ok, disk} = ElixirScope.open(dir)
    mfa = {Tracked, :work, 1}

    for store <- [live, disk] do
      assert [%{name: :a, value: 4}, %{name: :b, value: 8} | _] =
               Query.variables(mfa, call: 3, store: store)
    end

    assert Query.variables(mfa, call: 3, store: disk) ==
             Query.variables(mfa, call: 3, store: live)

    assert Query.tracked_calls(mfa, store: disk) == Query.tracked_calls(mfa, store: live)

    assert Query.var_history(Tracked, :b, store: disk) ==
             Query.var_history(Tracked, :b, store: live)

    assert length(Query.var_history(Tracked, :b, store: disk)) == 5
  end
end

defmodule ElixirScope.PersistCrashTest do
  # A BEAM in a separate OS process persists a capture and is killed with SIGKILL at a random
  # moment; its trace must open with every frame it had handed to the OS.
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase, only: [temp_path: 1]

  alias ElixirScope.{Persist, Query}

  @script """
  defmodule CrashCounter do
    use GenServer
    def init(n), do: {:ok, n}
    def handle_call(:add, _from, n), do: {:reply, n + 1, n + 1}
  end

  [dir, mode] = System.argv()

  extra =
    case mode do
      "plain" -> []
      "flusher" -> []
      "archive" -> [archive: true]
      "retain" -> [archive: true, max_bytes: 200_000]
    end

  {:ok, _} =
    ElixirScope.start(persist: [dir: dir, segment_bytes: 32_768, flush_interval: 5] ++ extra)

  {:ok, pid} = GenServer.start(CrashCounter, 0)
  :ok = ElixirScope.trace(pid)
  store = ElixirScope.Store.default()

  Stream.iterate(1, &(&1 + 1))
  |> Enum.each(fn i ->
    GenServer.call(pid, :add)
    send(pid, {:noise, i, String.duplicate("x", rem(i, 300))})

    cond do
      rem(i, 50) != 0 ->
        :ok

      # What the README promises: nothing status/0 counted as persisted is lost.
      mode == "flusher" ->
        IO.puts("flushed \#{ElixirScope.status().persisted}")

      true ->
        {:ok, on_disk} = ElixirScope.Persist.flush(store)
        IO.puts("flushed \#{on_disk}")
    end
  end)
  """

  @tag timeout: 120_000
  test "SIGKILL at random moments (while writing, archiving, deleting) loses no frame that was written" do
    script = temp_path("escope-crash") <> ".exs"
    File.write!(script, @script)
    on_exit(fn -> File.rm(script) end)

    for mode <- ["plain", "flusher", "archive", "retain"] do
      dir = temp_path("escope-crash-#{mode}")
      written = run_and_kill(script, [dir, mode], 200 + :rand.uniform(1_200))
      assert written > 0, "the child wrote nothing before it was killed"

      {:ok, store} = ElixirScope.open(dir)
      info = Persist.info(store)
      assert info.gaps == 0
      if mode != "retain", do: assert(info.first_seq == 1)
      last_seq = info.first_seq + info.events - 1
      assert last_seq >= written, "events up to #{last_seq}, #{written} were flushed"
      assert info.torn in [[], [info |> last_segment()]]

      # Every event decodes, and the counter's states count up by one, call by call.
      events = Query.events(store: store)
      assert length(events) == info.events
      assert Enum.map(events, & &1.seq) == Enum.to_list(info.first_seq..last_seq)
      [counter] = events |> Enum.filter(&(&1.kind == :state)) |> Enum.map(& &1.pid) |> Enum.uniq()
      # Another run's <0.N.0> is not this VM's: its pids carry a stand-in node.
      assert node(counter) != node()
      assert Persist.nodes()[node(counter)] == "nonode@nohost"
      values = Query.state_timeline(counter, store: store) |> Enum.map(& &1.data)
      first = hd(values)
      assert values == Enum.to_list(first..(first + length(values) - 1))
      # Over 20,000 events archive to well over the 200 kB kept.
      if mode == "retain" and written > 20_000, do: assert(first > 0, "retention deleted nothing")

      # The footers and the segment read through agree with the opened trace, pid for pid.
      {:ok, summary} = Persist.summary(dir)
      assert summary.events == info.events
      assert summary.pids == Query.group_by([store: store], :pid)
      assert summary.from_footers >= summary.segments - 1
      assert {:ok, last} = Query.state_at(counter, List.last(events).ts, store: store)
      assert last == List.last(values)
    end
  end

  defp last_segment(info),
    do: info.path |> Path.join("*.seg") |> Path.wildcard() |> Enum.max() |> Path.basename()

  # Runs the script until `ms` after its first flush, kills it with SIGKILL, and returns the
  # most events it reported on disk.
  defp run_and_kill(script, args, ms) do
    ebin = :code.lib_dir(:elixir_scope, :ebin) |> to_string()

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        {:line, 1024},
        args: ["-pa", ebin, script | args]
      ])

    os_pid = Port.info(port, :os_pid) |> elem(1)
    first = await_flush(port, 0, 30_000)
    deadline = System.monotonic_time(:millisecond) + ms
    written = read_until(port, first, deadline)
    {_, 0} = System.cmd("kill", ["-9", to_string(os_pid)])

    receive do
      {^port, {:exit_status, status}} -> assert status in [137, 9]
    after
      10_000 -> flunk("the child survived SIGKILL")
    end

    # Lines printed before the kill landed are still in the mailbox.
    drain(port, written)
  end

  defp await_flush(port, best, timeout) do
    receive do
      {^port, {:data, {:eol, "flushed " <> n}}} -> max(best, String.to_integer(n))
      {^port, {:data, _}} -> await_flush(port, best, timeout)
      {^port, {:exit_status, s}} -> flunk("the child exited with #{s} before writing")
    after
      timeout -> flunk("the child wrote nothing in #{timeout} ms")
    end
  end

  defp read_until(port, best, deadline) do
    left = deadline - System.monotonic_time(:millisecond)

    receive do
      {^port, {:data, {:eol, "flushed " <> n}}} ->
        read_until(port, max(best, String.to_integer(n)), deadline)

      {^port, {:data, _}} ->
        read_until(port, best, deadline)
    after
      max(left, 0) -> best
    end
  end

  defp drain(port, best) do
    receive do
      {^port, {:data, {:eol, "flushed " <> n}}} -> drain(port, max(best, String.to_integer(n)))
      {^port, {:data, _}} -> drain(port, best)
    after
      0 -> best
    end
  end
end
