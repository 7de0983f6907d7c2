defmodule ElixirScope.TrackTest do
  # The corpus of test/support/corpus/functions.ex.txt compiled twice, tracked and not: they
  # must behave identically, and the tracked one must record exactly the expected bindings.
  use ExUnit.Case, async: false
  import ExUnit.CaptureIO

  alias ElixirScope.Query

  doctest ElixirScope.Query.Vars

  defmodule ScopeOpts do
    use ElixirScope.Track, all: true

    @scope vars: [:b]
    def only_b(a) do
      b = a + 1
      c = b * 2
      c
    end

    @scope false
    def excluded(a), do: a + 1

    def included(a), do: a * 3
  end

  defmodule Tricky do
    use ElixirScope.Track, all: true
    use GenServer

    defexception [:message]
    def message(e), do: "custom: " <> e.message

    def child_spec(a), do: super(a) |> Map.put(:restart, :temporary)

    @t 1
    def attr, do: @t
    @t 2
    def attr2, do: @t

    def guards(x) when is_integer(x) when is_float(x), do: x * 2

    def ast, do: quote(do: foo(1))

    def waits(opts) do
      receive do
        :never -> :never
      after
        opts[:timeout] -> :timeout
      end
    end

    def in_task(x), do: Task.await(Task.async(fn -> y = x + 1 end))

    def init(n), do: {:ok, n}
  end

  defmodule Partial do
    use ElixirScope.Track

    def f(0), do: :zero
    @scope true
    def f(n), do: {:n, n}
  end

  @corpus File.read!(Path.expand("../support/corpus/functions.ex.txt", __DIR__))
  @header_lines 2

  setup_all do
    plain = "defmodule TrackCorpus.Plain do\n\n" <> @corpus <> "end\n"

    tracked =
      "defmodule TrackCorpus.Tracked do\n  use ElixirScope.Track, all: true\n" <>
        @corpus <> "end\n"

    plain_warnings = capture_io(:stderr, fn -> Code.compile_string(plain, "corpus_plain.ex") end)

    tracked_warnings =
      capture_io(:stderr, fn -> Code.compile_string(tracked, "corpus_tracked.ex") end)

    %{plain_warnings: plain_warnings, tracked_warnings: tracked_warnings}
  end

  setup do
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start()
    on_exit(&ElixirScope.stop/0)
  end

  # The corpus line of `text` (the first line containing it), in the tracked module's file.
  defp line_of(text) do
    idx = @corpus |> String.split("\n") |> Enum.find_index(&String.contains?(&1, text))
    idx + 1 + @header_lines
  end

  # The corpus modules exist only once setup_all compiled them: called through a function, so
  # the compiler does not look for them.
  defp t, do: TrackCorpus.Tracked

  defp bindings(fun, arity) do
    Query.variables({TrackCorpus.Tracked, fun, arity}) |> Enum.map(&{&1.name, &1.value, &1.line})
  end

  test "compiling tracked functions adds no warning", ctx do
    # The corpus warns twice on purpose: last_match/1 binds a variable it never uses (tracking
    # reads it, so that one goes away), underscored/1 uses an underscored variable (tracking does
    # not record it, so that one stays, once).
    plain =
      ctx.plain_warnings
      |> String.replace("corpus_plain.ex", "corpus_tracked.ex")
      |> String.replace("TrackCorpus.Plain", "TrackCorpus.Tracked")

    warnings = fn text -> text |> String.split("\n\n", trim: true) |> MapSet.new() end
    assert MapSet.subset?(warnings.(ctx.tracked_warnings), warnings.(plain))
    assert plain =~ ~s(variable "y" is unused)
    assert ctx.tracked_warnings =~ ~s(the underscored variable "_u" is used after being set)
    assert length(String.split(ctx.tracked_warnings, "_u")) == length(String.split(plain, "_u"))
  end

  test "destructuring matches and parameters record exact values and lines" do
    assert t().match_destructure({1, [2, 3, 4]}, %{k: 5}) == 11
    head = line_of("def match_destructure")

    assert bindings(:match_destructure, 2) == [
             {:a, 1, head},
             {:b, 2, head},
             {:rest, [3, 4], head},
             {:v, 5, head},
             {:x, 3, line_of("{x, y} =")},
             {:y, 2, line_of("{x, y} =")},
             {:z, 11, line_of("z = x * y + v")}
           ]
  end

  test "case, cond, with, receive, try, fn, for, if record their clause bindings" do
    t().cases(42)

    assert bindings(:cases, 1) == [
             {:n, 42, line_of("def cases")},
             {:m, 3, line_of("m = 3")},
             {:k, 42, line_of("k when k > 10")}
           ]

    t().cases(3)
    assert Enum.map(bindings(:cases, 1), &elem(&1, 0)) == [:n, :m]

    assert t().withs(%{a: 1, c: 3}) == 6

    assert Enum.map(bindings(:withs, 1), &{elem(&1, 0), elem(&1, 1)}) == [
             map: %{a: 1, c: 3},
             a: 1,
             b: 2,
             c: 3
           ]

    assert t().receives(:hello) == :hello
    assert {:got, :hello, line_of("{:msg, got} -> got")} in bindings(:receives, 1)

    assert t().tries(0) == {:error, "bad argument in arithmetic expression"}
    assert [:x, :e] == Enum.map(bindings(:tries, 1), &elem(&1, 0))
    assert t().tries(:throw) == {:caught, :thrown}
    assert [:x, :t] == Enum.map(bindings(:tries, 1), &elem(&1, 0))
    assert t().tries(5) == {:ok, 2}
    assert [:x, :q] == Enum.map(bindings(:tries, 1), &elem(&1, 0))

    assert t().fns([1, 2]) == [3, 5]

    assert Enum.map(bindings(:fns, 1), &{elem(&1, 0), elem(&1, 1)}) == [
             list: [1, 2],
             x: 1,
             y: 2,
             x: 2,
             y: 4
           ]

    assert t().comps(a: 2, b: -1) == [a: 4]

    assert Enum.map(bindings(:comps, 1), &{elem(&1, 0), elem(&1, 1)}) == [
             list: [a: 2, b: -1],
             k: :a,
             v: 2
           ]

    assert t().reduces([1, 2, 3]) == 6

    assert Enum.map(bindings(:reduces, 1), &{elem(&1, 0), elem(&1, 1)}) ==
             [list: [1, 2, 3], x: 1, acc: 0, x: 2, acc: 1, x: 3, acc: 3]

    assert t().nested_ifs(-4) == 4
    assert Enum.map(bindings(:nested_ifs, 1), &elem(&1, 0)) == [:x, :z]
  end

  test "shadowing, a final match, binaries, defaults, private functions and clauses" do
    assert t().shadowing(1) == 4
    assert Enum.map(bindings(:shadowing, 1), &{elem(&1, 0), elem(&1, 1)}) == [x: 1, x: 2, x: 4]

    assert t().last_match(1) == 2
    assert Enum.map(bindings(:last_match, 1), &{elem(&1, 0), elem(&1, 1)}) == [x: 1, y: 2]

    assert t().binaries(<<3, "abcd">>) == {?a, "bc"}

    assert Enum.map(bindings(:binaries, 1), &{elem(&1, 0), elem(&1, 1)}) == [
             len: 3,
             data: "abc",
             first: ?a,
             tail: "bc"
           ]

    assert t().defaults(3) == 6
    assert Enum.map(bindings(:defaults, 2), &{elem(&1, 0), elem(&1, 1)}) == [a: 3, b: 2]

    assert t().uses_private(5) == 11
    assert Enum.map(bindings(:helper, 1), &{elem(&1, 0), elem(&1, 1)}) == [x: 5, doubled: 10]

    assert t().classify("s") == {:bin, "s"}
    assert bindings(:classify, 1) == [{:x, "s", line_of("def classify(x) when is_binary(x)")}]
    assert t().classify(:a) == :other
    assert bindings(:classify, 1) == []

    assert t().implicit_try(0) == :infinity
    assert t().count_down(100_000, 0) == 5_000_050_000
  end

  test "exceptions are the same and the bindings before them are kept" do
    assert_raise ArgumentError, "negative: -1", fn -> t().raises(-1) end
    assert bindings(:raises, 1) == [{:x, -1, line_of("def raises")}]
  end

  test "variables, var_history and source_view" do
    for x <- [1, 2, 3], do: t().shadowing(x)

    assert Enum.map(
             Query.variables({TrackCorpus.Tracked, :shadowing, 1}, call: :first),
             & &1.value
           ) == [1, 2, 4]

    assert Enum.map(Query.variables(TrackCorpus.Tracked, call: 1), & &1.value) == [2, 3, 6]

    assert Enum.map(Query.var_history(TrackCorpus.Tracked, :x), & &1.value) == [
             1,
             2,
             4,
             2,
             3,
             6,
             3,
             4,
             8
           ]

    [entry | _] = Query.tracked_calls({TrackCorpus.Tracked, :shadowing, 1})
    assert Enum.map(Query.variables(entry), & &1.value) == [1, 2, 4]
    assert Query.variables(spawn(fn -> :ok end)) == []

    assert {:error, {:not_tracked, {NoSuch, :fun, 0}, :not_loaded}} =
             Query.variables({NoSuch, :fun, 0})

    assert {:error, _} = Query.source_view({NoSuch, :fun, 0})
  end

  test "empty answers that are mistakes say why" do
    # A module that does not use ElixirScope.Track.
    assert {:error, {:not_tracked, {Enum, :map, 2}, :no_track}} = Query.variables({Enum, :map, 2})

    # A tracked function not called yet: nothing to say.
    assert Query.variables({ScopeOpts, :only_b, 1}) == []
    # A variable the tracked code does not bind (or does not record).
    assert {:error, {:not_bound, :zzz, ScopeOpts, recorded}} = Query.var_history(ScopeOpts, :zzz)
    assert :b in recorded and :c not in recorded

    assert ElixirScope.Error.describe({:not_bound, :zzz, ScopeOpts, recorded}) =~
             "binds no variable :zzz"

    assert {:error, {:not_bound, :c, {ScopeOpts, :only_b, 1}, [:b]}} =
             Query.var_history({ScopeOpts, :only_b, 1}, :c)

    # Compiled with tracking off (config :elixir_scope, track: false, the :prod default).
    Application.put_env(:elixir_scope, :track, false)

    try do
      Code.compile_string("""
      defmodule TrackOffModule do
        use ElixirScope.Track
        @scope true
        def f(x), do: x + 1
      end
      """)
    after
      Application.delete_env(:elixir_scope, :track)
    end

    assert apply(TrackOffModule, :f, [1]) == 2

    assert {:error, {:not_tracked, {TrackOffModule, :f, 1}, :disabled}} =
             Query.variables({TrackOffModule, :f, 1})

    assert ElixirScope.Error.describe({:not_tracked, {TrackOffModule, :f, 1}, :disabled}) =~
             "tracking was off"
  end

  test "@scope vars: limits the variables, @scope false excludes a function" do
    assert ScopeOpts.only_b(1) == 4
    assert [%{name: :b, value: 2}] = Query.variables({ScopeOpts, :only_b, 1})
    assert ScopeOpts.excluded(1) == 2

    assert {:error, {:not_tracked, {ScopeOpts, :excluded, 1}, :not_annotated}} =
             Query.variables({ScopeOpts, :excluded, 1})

    assert ScopeOpts.included(2) == 6
    assert [%{name: :a, value: 2}] = Query.variables({ScopeOpts, :included, 1})

    view = Query.source_view({ScopeOpts, :only_b, 1})
    assert view =~ "def only_b(a) do"
    assert view =~ "b = a + 1    # b = 2"
    refute view =~ "c = 4"
  end

  test "tracking keeps overrides, super, attribute values, guards, quotes and clause order" do
    assert Exception.message(%Tricky{message: "m"}) == "custom: m"
    assert Tricky.child_spec(1).restart == :temporary
    assert Tricky.attr() == 1 and Tricky.attr2() == 2
    assert Tricky.guards(2) == 4 and Tricky.guards(1.5) == 3.0
    assert Tricky.ast() == {:foo, [], [1]}
    assert Tricky.waits(timeout: 0) == :timeout
    assert Enum.map(Query.variables({Tricky, :waits, 1}), & &1.name) == [:opts]
    assert Partial.f(0) == :zero
    assert Partial.f(5) == {:n, 5}
    assert [%{name: :n, value: 5}] = Query.variables({Partial, :f, 1})
  end

  test "an fn running in another process records into its call" do
    assert Tricky.in_task(1) == 2
    assert Enum.map(Query.variables({Tricky, :in_task, 1}), &{&1.name, &1.value}) == [x: 1, y: 2]
  end

  test "when no capture runs, tracked functions record nothing and behave the same" do
    ElixirScope.stop()
    assert t().match_destructure({1, [2, 3, 4]}, %{k: 5}) == 11
    {:ok, _} = ElixirScope.start()
    assert Query.variables({TrackCorpus.Tracked, :match_destructure, 2}) == []
  end

  test "tracked and untracked corpora agree on random inputs (PropEr)" do
    funs = [
      {:cases, fn i -> [i] end},
      {:conds, fn i -> [i] end},
      {:shadowing, fn i -> [i] end},
      {:last_match, fn i -> [i] end},
      {:tries, fn i -> [rem(i, 4)] end},
      {:raises, fn i -> [i] end},
      {:fns, fn i -> [Enum.to_list(0..abs(rem(i, 5)))] end},
      {:comps, fn i -> [[a: i, b: -i]] end},
      {:reduces, fn i -> [[i, i + 1]] end},
      {:nested_ifs, fn i -> [i] end},
      {:classify, fn i -> [if(rem(i, 2) == 0, do: i, else: "#{i}")] end},
      {:defaults, fn i -> [i, i] end},
      {:implicit_try, fn i -> [rem(i, 3)] end},
      {:withs, fn i -> [if(rem(i, 2) == 0, do: %{a: i, c: 1}, else: %{a: i})] end}
    ]

    outcome = fn mod, f, args ->
      try do
        {:ok, apply(mod, f, args)}
      rescue
        e -> {:raised, e.__struct__, Exception.message(e)}
      end
    end

    prop =
      :proper.forall(:proper_types.integer(-1000, 1000), fn i ->
        Enum.all?(funs, fn {f, args} ->
          outcome.(TrackCorpus.Tracked, f, args.(i)) == outcome.(TrackCorpus.Plain, f, args.(i))
        end)
      end)

    assert :proper.quickcheck(prop, [{:numtests, 300}, {:on_output, fn _, _ -> :ok end}]) == true
  end
end
