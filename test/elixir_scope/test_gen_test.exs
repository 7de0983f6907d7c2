defmodule ElixirScope.TestGenTest do
  # Tests written from traces: for three recorded scenarios (a counter, a bank account that
  # crashes on an overdraft, a state machine) the generated test compiles and passes against
  # the module, and fails once the module's behaviour is changed. Each generated test runs in
  # its own `elixir` VM, with the module's source (or a mutated copy) beside it.
  use ExUnit.Case, async: false
  @moduletag :capture_log
  @moduletag timeout: 120_000

  alias ElixirScope.TestGen

  doctest TestGen

  # (Compiled here, not with the project: ElixirScope leaves its own application's modules
  # alone, and test/support is part of it in the test build.)
  @support Path.expand("../scenarios/test_gen", __DIR__)
  for f <- ~w(counter.ex bank.ex door.ex), do: Code.require_file(f, @support)

  setup do
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start()
    on_exit(fn -> ElixirScope.stop() end)

    dir =
      Path.join(
        System.tmp_dir!(),
        "es_testgen_#{System.os_time()}_#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  # Runs the generated test against `source` (the module's code) in a fresh VM: true when it passes.
  defp passes?(dir, source, test) do
    File.write!(Path.join(dir, "module.ex"), source)
    File.write!(Path.join(dir, "replay_test.exs"), test)

    script = """
    ExUnit.start(autorun: false)
    Code.require_file("module.ex")
    Code.require_file("replay_test.exs")
    %{failures: f, total: t} = ExUnit.run()
    System.halt(if f == 0 and t > 0, do: 0, else: 1)
    """

    {_out, status} = System.cmd("elixir", ["-e", script], cd: dir, stderr_to_stdout: true)
    status == 0
  end

  defp scenario(name), do: File.read!(Path.join(@support, name))

  # The test generated from `pid`'s capture: it says `expected`, it passes against the scenario
  # module `file`, and it fails against each mutation `{from, to}` of it.
  defp assert_generated(pid, dir, file, expected, mutations) do
    {:ok, test} = TestGen.generate(pid)
    assert test =~ expected
    source = scenario(file)
    assert passes?(dir, source, test)

    for {from, to} <- mutations do
      refute passes?(dir, String.replace(source, from, to), test), "#{from} -> #{to} went unseen"
    end
  end

  test "a counter: calls, a cast and messages", %{dir: dir} do
    {:ok, pid} = GenServer.start(TestGenScenario.Counter, 10)
    :ok = ElixirScope.trace(pid)
    for k <- [1, 2, 3], do: GenServer.call(pid, {:add, k})
    GenServer.cast(pid, :reset)
    send(pid, {:tick, 5})
    5 = GenServer.call(pid, :get)

    # Adding twice the amount: every later step fails.
    assert_generated(
      pid,
      dir,
      "counter.ex",
      "assert result === {:reply, 11, %{count: 11, history: [1]}}",
      [{"s.count + k, %{s | count: s.count + k", "s.count + 2 * k, %{s | count: s.count + 2 * k"}]
    )
  end

  test "a bank account that crashes on an overdraft", %{dir: dir} do
    {:ok, pid} = GenServer.start(TestGenScenario.Bank, 100)
    :ok = ElixirScope.trace(pid)
    {:ok, 70} = GenServer.call(pid, {:withdraw, 30})
    {:ok, 90} = GenServer.call(pid, {:deposit, 20})
    ref = Process.monitor(pid)
    catch_exit(GenServer.call(pid, {:withdraw, 500}))
    assert_receive {:DOWN, ^ref, _, _, _}

    # An overdraft allowed: the recorded crash no longer happens. A wrong balance after a
    # deposit.
    assert_generated(pid, dir, "bank.ex", "assert_raise ArgumentError", [
      {"when n > b", "when n > b + 1000"},
      {"s.balance + n, entries", "s.balance + n + 1, entries"}
    ])
  end

  test "a state machine (gen_statem)", %{dir: dir} do
    {:ok, pid} = :gen_statem.start(TestGenScenario.Door, 1234, [])
    :ok = ElixirScope.trace(pid)
    :wrong = :gen_statem.call(pid, {:unlock, 1})
    :opened = :gen_statem.call(pid, {:unlock, 1234})
    :gen_statem.cast(pid, :knock)
    :locked = :gen_statem.call(pid, :lock)

    assert_generated(
      pid,
      dir,
      "door.ex",
      "{:keep_state, %{code: 1234, tries: 1}, [{:reply, from, :wrong}]}",
      [{"{:reply, from, :opened}", "{:reply, from, :open}"}]
    )
  end

  test "a struct in a state is written as data; a state changed between callbacks is set", %{
    dir: dir
  } do
    {:ok, pid} = GenServer.start(TestGenScenario.Counter, 0)
    :ok = ElixirScope.trace(pid)
    send(pid, {:tick, 1})
    :sys.replace_state(pid, &Map.put(&1, :at, ~D[2026-12-05]))
    send(pid, {:tick, 2})
    3 = GenServer.call(pid, :get)
    {:ok, test} = TestGen.generate(pid)
    assert test =~ "the state changed outside a callback"
    assert test =~ "__struct__: Date"
    assert passes?(dir, scenario("counter.ex"), test)
  end

  test "nothing to replay is an error; a step passing a pid cannot be written" do
    assert TestGen.generate(self()) == {:error, :no_callbacks}

    {:ok, pid} = GenServer.start(TestGenScenario.Counter, 0)
    :ok = ElixirScope.trace(pid)
    send(pid, {:tick, 1})
    :sys.get_state(pid)
    ref = Process.monitor(pid)
    # (It crashes on it: the events are all in once it is down.)
    send(pid, {:tick, self()})
    assert_receive {:DOWN, ^ref, _, _, _}
    assert {:error, {:not_data, seq}} = TestGen.generate(pid)

    assert [%{data: [{:tick, pid_arg}, _]}] =
             ElixirScope.Query.events(after_seq: seq - 1, before_seq: seq + 1)

    assert is_pid(pid_arg)
  end
end
