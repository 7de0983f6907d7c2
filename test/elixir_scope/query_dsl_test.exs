defmodule ElixirScope.QueryDSLTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase
  import ElixirScope.Query, only: [query: 1]

  alias ElixirScope.Query
  alias ElixirScope.Query.DSL

  doctest DSL

  defmodule Point do
    defstruct x: 0, y: 0
  end

  defmodule Math do
    def sum(list), do: Enum.sum(list)
  end

  defmodule Counter do
    use GenServer
    def init(n), do: {:ok, %{count: n, name: :counter}}
    def handle_call(:bump, _from, s), do: {:reply, :ok, %{s | count: s.count + 1}}
  end

  # A receiver traced into a private store gets `terms` as messages, in order.
  defp receive_all(terms) do
    store = new_store()
    n = length(terms)

    # (A plain recursive loop: loading a module would add the code server's reply.)
    loop = fn
      _loop, 0 -> :ok
      loop, k -> receive(do: (_ -> loop.(loop, k - 1)))
    end

    pid = spawn_waiting(fn -> loop.(loop, n) end)

    trace_into(pid, store)
    Enum.each(terms, &send(pid, &1))
    go_and_wait(pid)
    # The receiver also got :go, last.
    wait_until(fn -> length(events(store, kind: :receive, pid: pid)) == n + 1 end)
    {store, pid}
  end

  # Random terms from a seed, shaped to hit the patterns below often.
  defp term(0), do: leaf()

  defp term(depth) do
    case :rand.uniform(10) do
      1 ->
        {:increment, Enum.random([-3, 0, 5, 6, 9, 6.5, :x, "7"])}

      2 ->
        List.to_tuple(for _ <- 1..Enum.random(0..3)//1, do: term(depth - 1))

      3 ->
        for _ <- 1..Enum.random(0..3)//1, do: term(depth - 1)

      4 ->
        [term(depth - 1) | leaf()]

      5 ->
        Map.new(Enum.take_random([k: term(depth - 1), j: leaf(), x: 1], Enum.random(0..3)))

      6 ->
        %Point{x: leaf(), y: leaf()}

      7 ->
        Enum.random(["GET /a", "GET ", "POST /b", "GE"])

      8 ->
        Enum.random([
          {leaf(), leaf()} |> then(fn {l, _} -> {l, l} end),
          {1, 1.0},
          {[1], [1.0]},
          {[:a, 2], %{j: :a}},
          {[1], %{j: 1.0}}
        ])

      _ ->
        leaf()
    end
  end

  defp leaf do
    Enum.random([
      :a,
      :b,
      :increment,
      true,
      nil,
      1,
      2,
      2.5,
      -3,
      10_000_000_000_000_000_000,
      1.0,
      "x",
      <<1, 2>>,
      [],
      {},
      self()
    ])
  end

  @patterns [
    "{:increment, n} when n > 5",
    "{:increment, n}",
    "{a, a}",
    "[h | t]",
    "[a, b | _]",
    "[_]",
    "%{k: v}",
    "%{k: v, x: 1} when is_integer(v) or is_list(v)",
    "%{}",
    "%ElixirScope.QueryDSLTest.Point{x: x} when is_atom(x)",
    ~S("GET " <> path),
    ~S("GET " <> "/a"),
    "{_, _, x} when x in [1, 2, :a, nil]",
    "n when is_number(n) and n >= 2.5",
    "x when is_atom(x) and x != nil or is_binary(x)",
    "{a, b} when is_integer(a) and a < b",
    "{x, y} when x == y",
    "{x, y} when x === y",
    "t when not is_tuple(t) and t > :b",
    "{}",
    "[]",
    "true",
    "nil",
    "-3",
    "1.0",
    "10000000000000000000",
    "{:increment, _n} when true",
    "{[h | _], %{j: h}}"
  ]

  test "string patterns select exactly what Elixir's own match selects, with the same binds" do
    # Random terms from the run's seed (shown on failure): `mix test --seed N` replays them.
    seed = ExUnit.configuration()[:seed]
    :rand.seed(:exsss, {seed, 11, 13})
    # Plus witnesses, so every pattern selects something whatever the seed.
    witnesses = [
      {:increment, 7},
      {:t, :u, 2},
      {1, 2},
      10_000_000_000_000_000_000,
      {[:a], %{j: :a}},
      %{k: [], x: 1},
      1.0,
      nil,
      {3, 3},
      [1, 2, 3],
      [:x],
      %ElixirScope.QueryDSLTest.Point{x: :a},
      "GET /a",
      {:a, :b, 1},
      3.5,
      :zebra,
      "bin",
      {},
      [],
      true,
      -3
    ]

    terms = Enum.shuffle(witnesses ++ for(_ <- 1..400, do: term(3)))
    {store, pid} = receive_all(terms)
    received = events(store, kind: :receive, pid: pid)
    assert Enum.map(received, & &1.data) == terms ++ [:go]

    for source <- @patterns do
      {reference, _} =
        Code.eval_string(
          "fn input__ -> case input__ do #{source} -> {:ok, binding()}; _ -> :no end end"
        )

      expected =
        for e <- received, {:ok, b} <- [reference.(e.data)] do
          {e.seq,
           for(
             {k, v} <- b,
             k != :input__,
             not String.starts_with?("#{k}", "_"),
             into: %{},
             do: {"#{k}", v}
           )}
        end

      got = for %{event: e, binds: b} <- Query.find(store: store, message: source), do: {e.seq, b}
      assert got == expected, "pattern #{source} (seed #{seed})"

      # The same without the tag index (a kind it does not cover forces a scan).
      scanned = Query.find(store: store, data: source, kind: [:receive, :call])
      assert Enum.map(scanned, &{&1.event.seq, &1.binds}) == expected, "scan of #{source}"

      # Every pattern both selects and rejects some of the terms, so the comparison means something.
      assert length(expected) in 1..(length(received) - 1),
             "pattern #{source}: #{length(expected)}"
    end
  end

  # A random pattern that matches `term` (before its guard), made by abstracting parts of it:
  # `_`, variables (sometimes repeated), partial maps, `[h | t]`, binary prefixes.
  defp abstract(term, vars, depth) do
    case {:rand.uniform(8), term} do
      {1, _} ->
        {{:_, [], nil}, vars}

      {2, _} ->
        var(vars)

      {_, t} when is_pid(t) ->
        var(vars)

      {_, t} when is_tuple(t) and depth > 0 ->
        {els, vars} = t |> Tuple.to_list() |> Enum.map_reduce(vars, &abstract(&1, &2, depth - 1))
        {{:{}, [], els}, vars}

      {r, [h | _]} when depth > 0 and r < 5 ->
        {h, vars} = abstract(h, vars, depth - 1)
        {t, vars} = var(vars)
        {[{:|, [], [h, t]}], vars}

      {_, t} when is_list(t) and depth > 0 ->
        if List.improper?(t), do: var(vars), else: list(t, vars, depth)

      {_, t} when is_map(t) and depth > 0 ->
        keep = Enum.filter(Map.to_list(t), fn _ -> :rand.uniform(2) == 1 end)

        {pairs, vars} =
          Enum.map_reduce(keep, vars, fn {k, v}, vars ->
            {v, vars} = abstract(v, vars, depth - 1)
            {{Macro.escape(k), v}, vars}
          end)

        {{:%{}, [], pairs}, vars}

      {_, <<prefix::binary-size(2), _::binary>>} ->
        {rest, vars} = var(vars)
        {{:<>, [], [prefix, rest]}, vars}

      {_, t} ->
        if is_tuple(t) or is_list(t) or is_map(t), do: var(vars), else: {Macro.escape(t), vars}
    end
  end

  defp list(list, vars, depth), do: Enum.map_reduce(list, vars, &abstract(&1, &2, depth - 1))

  # A new variable, or now and then one already bound (which must then be equal).
  defp var(vars) do
    if vars != [] and :rand.uniform(6) == 1 do
      {Macro.var(Enum.random(vars), nil), vars}
    else
      name = String.to_atom("v#{length(vars)}")
      {Macro.var(name, nil), [name | vars]}
    end
  end

  defp guard([]), do: nil

  defp guard(vars) do
    v = Macro.var(Enum.random(vars), nil)

    Enum.random([
      quote(do: is_integer(unquote(v))),
      quote(do: unquote(v) > 2),
      quote(do: unquote(v) <= :b),
      quote(do: unquote(v) == 1),
      quote(do: unquote(v) == [1.0] or unquote(v) == {1.0}),
      quote(do: unquote(v) in [1, :a, "x"]),
      quote(do: not is_tuple(unquote(v)) and unquote(v) != nil),
      quote(do: is_binary(unquote(v)) or is_list(unquote(v)))
    ])
  end

  test "random patterns made from random terms select what Elixir's own match selects" do
    seed = ExUnit.configuration()[:seed]
    :rand.seed(:exsss, {seed, 5, 8})
    terms = for _ <- 1..200, do: term(3)
    {store, pid} = receive_all(terms)
    received = events(store, kind: :receive, pid: pid)

    matched =
      for _ <- 1..60 do
        {ast, vars} = abstract(Enum.random(terms), [], 3)
        guard = if :rand.uniform(2) == 1, do: guard(vars)
        source = Macro.to_string(if guard, do: {:when, [], [ast, guard]}, else: ast)

        {reference, _} =
          Code.eval_string(
            "fn input__ -> case input__ do #{source} -> {:ok, binding()}; _ -> :no end end"
          )

        expected =
          for e <- received, {:ok, b} <- [reference.(e.data)] do
            {e.seq, for({k, v} <- b, k != :input__, into: %{}, do: {"#{k}", v})}
          end

        got =
          for %{event: e, binds: b} <- Query.find(store: store, message: source), do: {e.seq, b}

        assert got == expected, "pattern #{source} (seed #{seed})"
        expected != []
      end

    # Each pattern matches the term it came from unless its guard rejects it: most match.
    assert Enum.count(matched, & &1) > 30
  end

  test "query/1 compiles the pattern, with pins, aliases and structs" do
    wanted = 6

    {store, pid} =
      receive_all([{:increment, 3}, {:increment, 6}, %Point{x: 1, y: 2}, {:increment, 9}])

    assert [%{binds: %{n: 6}, event: %{data: {:increment, 6}, kind: :receive}}] =
             query(store: store, pid: pid, message: {:increment, n} when n == ^wanted)

    assert [%{binds: %{y: 2}}] = query(store: store, message: %Point{y: y})

    assert [9] =
             for(
               %{binds: %{n: n}} <-
                 query(store: store, message: {:increment, n} when n > 5, order: :desc, limit: 1),
               do: n
             )

    # Only the values, and pages that follow each other by seq.
    binds = query(store: store, message: {:increment, n}, select: :binds)
    assert Enum.map(binds, & &1.n) == [3, 6, 9]
    [first, second, third] = Enum.map(binds, & &1.seq)

    assert [%{seq: ^first}, %{seq: ^second}] =
             query(store: store, message: {:increment, _}, select: :binds, limit: 2)

    assert [%{seq: ^third}] =
             query(store: store, message: {:increment, _}, select: :binds, after_seq: second)

    assert [%{seq: ^second}] =
             query(
               store: store,
               message: {:increment, _},
               select: :binds,
               order: :desc,
               before_seq: third,
               limit: 1
             )

    assert_raise ArgumentError, ~r/invalid :select :all/, fn ->
      query(store: store, message: {:increment, _}, select: :all)
    end

    # No pattern option: plain filtered events.
    assert length(Query.find(store: store, kind: :receive)) == 5
    seqs = for e <- events(store, kind: :receive), do: %{seq: e.seq}
    assert Query.find(store: store, kind: :receive, select: :binds) == seqs

    assert_raise ArgumentError, ~r/invalid :select :all/, fn ->
      Query.find(store: store, kind: :receive, select: :all)
    end
  end

  test "state, args and result patterns", %{} do
    store = new_store()
    {:ok, server} = GenServer.start_link(Counter, 1)
    trace_states_into(server, store)
    for _ <- 1..4, do: :ok = GenServer.call(server, :bump)
    wait_until(fn -> length(query(store: store, state: %{count: c} when c >= 4)) == 2 end)

    counts = for %{binds: %{c: c}} <- query(store: store, state: %{count: c}), do: c
    assert counts == [1, 2, 3, 4, 5]

    # module: keeps the states Counter's callbacks left (not the snapshot taken when tracing began).
    counts =
      for %{binds: %{c: c}} <- query(store: store, module: Counter, state: %{count: c}), do: c

    assert counts == [2, 3, 4, 5]
    assert [] = query(store: store, state: %{count: c} when c > 5)

    # Function calls: args and results.
    {:ok, _} = ElixirScope.Tracer.trace_module(Math, false)
    worker = spawn_waiting(fn -> Math.sum([1, 2, 3]) end)
    trace_into(worker, store)
    go_and_wait(worker)
    wait_until(fn -> query(store: store, pid: worker, result: 6) != [] end)

    assert [%{binds: %{l: [1, 2, 3]}}] =
             query(store: store, pid: worker, mfa: {Math, :sum}, args: [l] when is_list(l))
  end

  test "pins and guard literals compare maps whole; nested tails; __MODULE__; limit 0" do
    {store, _} = receive_all([%{x: 1}, %{x: 1, y: 2}, %{}, [1, 2, 3], {__MODULE__, 5}])
    m = %{x: 1}
    assert [%{event: %{data: %{x: 1} = exactly}}] = query(store: store, message: ^m)
    assert map_size(exactly) == 1
    assert length(query(store: store, message: %{x: 1})) == 2
    assert [%{event: %{data: %{}}}] = query(store: store, message: s when s == %{})
    assert [%{binds: %{a: 1, b: 2}}] = query(store: store, message: [a | [b | _]])
    assert [%{binds: %{n: 5}}] = query(store: store, message: {__MODULE__, n})
    assert [] = query(store: store, message: _, limit: 0)

    assert_raise ArgumentError, ~r/__MODULE__ only works in query\/1/, fn ->
      Query.find(store: store, message: "{__MODULE__, n}")
    end

    assert_raise ArgumentError, ~r/expected a string or quoted pattern/, fn ->
      Query.find(store: store, message: %{a: 1})
    end

    assert_raise ArgumentError, ~r/rename the variable seq/, fn ->
      query(store: store, message: {_, seq}, select: :binds)
    end

    assert_raise ArgumentError, ~r/bucket {1000000000000, :minute} is too long/, fn ->
      Query.rate([store: store], {1_000_000_000_000, :minute})
    end
  end

  test "messages sent to a registered name are matched on the message, not the name" do
    store = new_store()
    name = :"dsl_test_#{System.unique_integer([:positive])}"
    target = spawn(fn -> receive(do: (:stop -> :ok)) end)
    Process.register(target, name)
    sender = spawn_waiting(fn -> send(name, {:hello, 42}) end)
    trace_into(sender, store)
    go_and_wait(sender)
    send(target, :stop)
    wait_until(fn -> events(store, pid: sender, kind: :send) != [] end)

    assert [%{binds: %{x: 42}, event: %{peer: ^name, data: {:hello, 42}}}] =
             query(store: store, message: {:hello, x})

    assert Query.group_by([store: store, kind: :send], :tag) == %{hello: 1}
  end

  test "a name that is not an atom matches nothing and creates no atom" do
    {store, _} = receive_all([{:a, 1}])
    name = "scope_never_#{System.unique_integer([:positive])}"
    assert [] = Query.find(store: store, message: "{:#{name}, _}")
    assert [] = Query.find(store: store, message: "%#{String.capitalize(name)}{}")

    assert [%{binds: %{^name => 1}}] = Query.find(store: store, message: "{:a, #{name}}")
    assert_raise ArgumentError, fn -> String.to_existing_atom(name) end

    # A sigil's name was made an atom by the tokenizer: now refused before tokenizing. (A
    # letter whose sigil atom does not exist yet in this VM.)
    letter = Enum.find(?A..?Z, &(not atom_exists?("sigil_#{<<&1>>}")))
    assert_raise ArgumentError, ~r/sigils/, fn -> Query.find(message: "~#{<<letter>>}(abc)") end
    refute atom_exists?("sigil_#{<<letter>>}")
    # A tilde inside a string is text.
    assert [] = Query.find(store: store, message: ~S|{:a, "~Q(abc)"}|)
  end

  defp atom_exists?(name) do
    String.to_existing_atom(name)
    true
  rescue
    ArgumentError -> false
  end

  test "bad patterns raise ArgumentError saying what is wrong" do
    store = new_store()

    for {source, message} <- [
          {"{:x, n} when m > 1", "the guard uses m, which the pattern does not bind"},
          {"{:x, ^n}", "pins (^) only work in query/1"},
          {"{:x, n", "missing terminator"},
          {"foo(1)", "unsupported construct foo(1)"},
          {"%{k => 1}", "map keys in query patterns must be literals"},
          {"x when length(x) > 1", "length(x)"},
          {"a <> \"b\"", "the left side of <> must be a literal string"},
          {"x when x in y", "the right side of `in` must be a literal list"},
          {"x when is_zzz(x)", "unsupported guard is_zzz/1"},
          {"x when is_qqqq_never(x)", "unsupported guard is_qqqq_never/1"},
          {"x when x in [#{Enum.join(1..5000, ", ")}]", "`in` has 5000 elements, more than 4096"},
          {"{:a, " <> String.duplicate(" ", 70_000) <> "x}", "70007 bytes, more than 65536"},
          {<<"{:a, ", 0xFF, "}">>, "not valid UTF-8"},
          {"~Q(abc)", "sigils (~) are not supported"},
          {"{:a, ~w(x y)}", "sigils (~) are not supported"}
        ] do
      error = assert_raise ArgumentError, fn -> Query.find(store: store, message: source) end
      assert error.message =~ "invalid query pattern: "
      assert error.message =~ message, "#{source}: #{error.message}"
    end

    deep = String.duplicate("{", 100) <> "x" <> String.duplicate("}", 100)
    assert_raise ArgumentError, ~r/deep/, fn -> Query.find(store: store, message: deep) end

    assert_raise ArgumentError, ~r/unknown option :mesage, did you mean :message\?/, fn ->
      Query.find(store: store, mesage: "x")
    end

    assert_raise ArgumentError, ~r/unknown option :bogus \(allowed/, fn ->
      Code.eval_quoted(
        quote do
          import ElixirScope.Query
          query(message: {:a, _}, bogus: 1)
        end
      )
    end

    assert_raise ArgumentError, ~r/one content pattern at a time/, fn ->
      Query.find(store: store, message: "x", state: "y")
    end

    assert_raise ArgumentError, ~r/invalid :kind/, fn ->
      Query.find(store: store, kind: :bogus, message: "x")
    end
  end
end
