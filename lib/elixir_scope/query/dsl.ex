defmodule ElixirScope.Query.DSL do
  @moduledoc """
  Queries with Elixir patterns on event contents, run natively: the pattern and its guard are
  compiled into data, and the Rust core matches them against each stored payload's bytes without
  building terms for events that do not match.

      import ElixirScope.Query
      query kind: :receive, pid: pid, message: {:increment, n} when n > 5
      #=> [%{event: %ElixirScope.Event{...}, binds: %{n: 7}}, ...]
      query module: Counter, state: %{count: c} when c > 10

      ElixirScope.Query.find(message: "{:increment, n} when n > 5")   # a pattern as a string

  ## Where a pattern applies

    * `message:` - the message of `:send`, `:receive` and `:send_to_dead` events;
    * `args:` - the argument list of `:call` events;
    * `result:` - the value of `:return` events;
    * `state:` - the state of `:state` events (`module:` selects the callback module);
    * `data:` - the data of any event (with `kind:` to choose which).

  Every other option is a filter of `ElixirScope.Query.events/1` (`pid:`, `kind:`, `since:`,
  `limit:` (of matches), `order:`, `after_seq:`, ...); `module: M` is short for `mfa: M`.
  `select: :binds` returns only the bound values, each map with the event's `:seq`
  (`%{seq: 812, n: 7}`), without building the events: the cheapest form when the values are
  what you want.

  ## Paging

  Matches come in seq order; a page ends with the seq of its last match, and the next page
  starts after it (`after_seq:`, or `before_seq:` with `order: :desc`). Seqs are assigned at
  capture and never change, so pages stay stable while capture goes on: new events only ever
  come after the newest page.

  ## Patterns and guards

  Patterns: literals, `_`, variables (a repeated variable must be equal), tuples, lists
  (including `[h | t]`), maps (partial, literal keys), structs, binary prefixes (`"GET " <>
  path`) and pins (`^x`, in `query/1` only). Guards: comparisons (`==`, `!=`, `===`, `!==`,
  `<`, `<=`, `>`, `>=`; ordering between numbers, atoms or binaries), `is_integer/1` and the
  other type tests, `and`, `or`, `not`, `in` with a literal list.

  ## Safety

  A pattern is data to the core: no atom is created from a pattern string (an atom that does not
  exist simply matches nothing, compared by name), pattern depth is bounded, and the scan runs on
  a dirty scheduler.
  """

  alias ElixirScope.{Event, Native, Query, Store}

  @pattern_keys [:message, :args, :result, :state, :data]
  @kinds_for %{
    message: [:send, :receive, :send_to_dead],
    args: [:call],
    result: [:return],
    state: [:state],
    data: nil
  }
  @max_vars 64
  @max_depth 64
  # Bounds on a pattern's size: its source, and the list of an `in` guard (each element is
  # compared with every candidate value).
  @max_source 65_536
  @max_in 4_096
  @compare [:==, :!=, :===, :!==, :<, :<=, :>, :>=]
  @types ~w(integer float number atom boolean nil binary list tuple map pid reference)a

  @typedoc "A match: the event and the values its pattern bound."
  @type match :: %{event: Event.t(), binds: %{atom() => term()}}

  @doc false
  # The macro behind `ElixirScope.Query.query/1`: compiles the pattern at compile time.
  def query_macro(opts, env) do
    if Keyword.keyword?(opts), do: check_keys!(opts, [:select])

    {rest, {key, pattern}} =
      case split_pattern!(opts) do
        {_, nil} -> invalid!("expected one of #{inspect(@pattern_keys)} with a pattern", [])
        split -> split
      end

    {ir, guard, names} = compile!(pattern, env)

    quote do
      ElixirScope.Query.DSL.run(
        unquote(rest),
        unquote(key),
        unquote(Macro.escape({ir, guard}, unquote: true)),
        unquote(names)
      )
    end
  end

  @doc """
  Runs a query whose pattern is given as a string (parsed with `Code.string_to_quoted/1`,
  validated, never evaluated) or as a quoted expression. Pins are not allowed. Returns the
  matches, or raises `ArgumentError` saying what is wrong and where.

  ## Examples

      iex> ElixirScope.Query.DSL.find(message: "{:x, n} when m > 1", store: ElixirScope.Store.new!())
      ** (ArgumentError) invalid query pattern: the guard uses m, which the pattern does not bind (line 1)
  """
  @spec find(keyword()) :: [match()]
  def find(filters) do
    case compile_filters(filters, [:select]) do
      {rest, nil} ->
        {select, rest} = select!(rest)
        events = rest |> kinds_for(nil) |> Query.events()

        case select do
          :binds -> Enum.map(events, &%{seq: &1.seq})
          :matches -> Enum.map(events, &%{event: &1, binds: %{}})
        end

      {rest, {key, ir, guard, names}} ->
        run(rest, key, {ir, guard}, names)
    end
  end

  @doc false
  # Splits find-style filters into the other filters and the compiled content pattern
  # (`{key, pattern, guard, bind names}`, or nil when there is none).
  @spec compile_filters(keyword(), [atom()]) ::
          {keyword(), nil | {atom(), term(), term(), [term()]}}
  def compile_filters(filters, extra \\ []) do
    filters = ElixirScope.Args.opts!(filters)
    check_keys!(filters, extra)

    case split_pattern!(filters) do
      {rest, nil} ->
        {rest, nil}

      {rest, {key, source}} ->
        ast = if is_binary(source), do: parse!(source), else: quoted!(source)
        {ir, guard, names} = compile!(ast, nil)
        {rest, {key, ir, guard, Enum.map(names, &name_string/1)}}
    end
  end

  # The other options and the one content pattern (`{key, pattern}`), or nil when there is none.
  defp split_pattern!(opts) do
    case Enum.split_with(opts, fn {k, _} -> k in @pattern_keys end) do
      {[], rest} ->
        {rest, nil}

      {[one], rest} ->
        {rest, one}

      {many, _} ->
        invalid!("one content pattern at a time, got #{inspect(Keyword.keys(many))}", [])
    end
  end

  defp check_keys!(filters, extra) do
    allowed = @pattern_keys ++ extra ++ Query.filter_keys()

    case Enum.reject(filters, fn
           {k, _} -> k in allowed
           _ -> false
         end) do
      [] ->
        :ok

      [{key, _} | _] ->
        ElixirScope.Options.unknown!(key, allowed)

      [other | _] ->
        ElixirScope.Options.unknown!(other, allowed)
    end
  end

  @doc false
  # The options that take a content pattern.
  def pattern_keys, do: @pattern_keys

  @doc false
  # The store and native filter for `filters` and a pattern on `key` (whose kinds are the
  # default `kind:`).
  @spec native_args(keyword(), atom() | nil) :: {ElixirScope.Store.t(), map()}
  def native_args(filters, key), do: filters |> kinds_for(key) |> Query.native_filter()

  defp kinds_for(filters, key) do
    case @kinds_for[key] do
      nil -> filters
      kinds -> Keyword.put_new(filters, :kind, kinds)
    end
  end

  @doc false
  # Compiles an AST that parse_string!/1 produced (or a part of one) into `{pattern, guard,
  # bind names}` for run/4.
  def compile_parsed!(ast) do
    {ir, guard, names} = compile!(ast, nil)
    {ir, guard, Enum.map(names, &name_string/1)}
  end

  @doc false
  def parse_string!(source), do: parse!(source)

  # Parses a pattern string without creating atoms: names that are not atoms already stay
  # strings, wrapped as `%{__name__: "name"}` (a raw map, which no source text produces).
  defp parse!(source) do
    cond do
      byte_size(source) > @max_source ->
        invalid!("the pattern is #{byte_size(source)} bytes, more than #{@max_source}", [])

      not String.valid?(source) ->
        invalid!("the pattern is not valid UTF-8", [])

      sigil?(source) ->
        # The tokenizer makes a sigil's atom (:sigil_Q) itself, whatever the atom options say.
        invalid!("sigils (~) are not supported in a pattern string", [])

      true ->
        :ok
    end

    encoder = fn name, _meta ->
      {:ok,
       try do
         String.to_existing_atom(name)
       rescue
         ArgumentError -> %{__name__: name}
       end}
    end

    case Code.string_to_quoted(source, static_atoms_encoder: encoder, existing_atoms_only: true) do
      {:ok, ast} -> ast
      {:error, {meta, msg, token}} -> invalid!("#{format_error(msg)}#{token}", meta)
    end
  end

  # Whether `~` followed by a letter appears outside string and charlist literals.
  defp sigil?(source), do: sigil?(source, nil)

  defp sigil?(<<>>, _quote), do: false
  defp sigil?(<<?\\, _, rest::binary>>, q) when q != nil, do: sigil?(rest, q)
  defp sigil?(<<q, rest::binary>>, q), do: sigil?(rest, nil)
  defp sigil?(<<q, rest::binary>>, nil) when q in [?", ?'], do: sigil?(rest, q)
  defp sigil?(<<?~, c, _::binary>>, nil) when c in ?a..?z or c in ?A..?Z, do: true
  defp sigil?(<<_, rest::binary>>, q), do: sigil?(rest, q)

  defp format_error({prefix, suffix}), do: "#{prefix}#{suffix}"
  defp format_error(msg), do: to_string(msg)

  defp quoted!(ast) do
    # (Macro.validate/1 raises on an improper list.)
    validated =
      try do
        Macro.validate(ast)
      rescue
        FunctionClauseError -> {:error, ast}
      end

    case validated do
      :ok -> ast
      {:error, bad} -> invalid!("expected a string or quoted pattern, got #{inspect(bad)}", [])
    end
  end

  # A name as a string (binds from a pattern string are keyed by strings: no atom is made).
  defp name_string(name) when is_atom(name), do: Atom.to_string(name)
  defp name_string(%{__name__: name}), do: name

  @doc false
  # Runs a compiled query: `filters` as for Query.events/1 (plus `module:`).
  def run(filters, key, {pattern, guard}, names) do
    {select, filters} = select!(filters)
    {store, filter} = native_args(filters, key)
    node = node()

    case select do
      :matches ->
        for {tuple, values} <- match(store, filter, pattern, guard, length(names), true) do
          %{event: Event.from_native(tuple, node), binds: Map.new(Enum.zip(names, values))}
        end

      :binds ->
        if :seq in names,
          do:
            raise(
              ArgumentError,
              "select: :binds puts the seq under :seq; rename the variable seq"
            )

        for {seq, values} <- match(store, filter, pattern, guard, length(names), false) do
          Map.new([{:seq, seq} | Enum.zip(names, values)])
        end
    end
  end

  # The `:select` option (`:matches` by default) and the other filters.
  defp select!(filters) do
    case Keyword.pop(filters, :select, :matches) do
      {select, _} = popped when select in [:matches, :binds] ->
        popped

      {other, _} ->
        raise ArgumentError, "invalid :select #{inspect(other)}, expected :matches or :binds"
    end
  end

  defp match(store, filter, pattern, guard, vars, events?) do
    native!(fn ->
      Native.query_match(Store.ref(store), filter, pattern, guard, vars, events?)
    end)
  end

  @doc false
  # Runs a NIF that takes a compiled pattern: its `{:ok, result}` gives the result, a refusal
  # (`{:error, reason}`, or badarg for a pinned value it cannot take) an ArgumentError.
  def native!(fun) do
    result =
      try do
        fun.()
      rescue
        ArgumentError ->
          invalid!(
            "a pinned value is nested too deeply (or the compiled pattern is malformed)",
            []
          )
      end

    case result do
      {:ok, result} -> result
      {:error, reason} -> invalid!(reason, [])
    end
  end

  @doc """
  The pattern form of a term, for pinned values (`^x`).

  ## Examples

      iex> ElixirScope.Query.DSL.literal({:ok, [1]})
      {:tuple, [{:atom, "ok"}, {:list, [{:int, 1}], :empty}]}
  """
  @spec literal(term()) :: tuple() | atom()
  def literal(a) when is_atom(a), do: {:atom, Atom.to_string(a)}

  def literal(i)
      when is_integer(i) and i >= -9_223_372_036_854_775_808 and i <= 9_223_372_036_854_775_807,
      do: {:int, i}

  def literal(f) when is_float(f), do: {:float, f}
  def literal(b) when is_binary(b), do: {:binary, b}
  def literal([]), do: :empty
  def literal(l) when is_list(l), do: literal_list(l, [])
  def literal(t) when is_tuple(t), do: {:tuple, t |> Tuple.to_list() |> Enum.map(&literal/1)}

  # (A struct is its map, `:__struct__` included.)
  def literal(m) when is_map(m),
    do: {:map_exact, m |> Map.to_list() |> Enum.map(fn {k, v} -> {literal(k), literal(v)} end)}

  # Pids, references, ports, funs, big integers, bitstrings: their exact encoding.
  def literal(other) do
    <<131, body::binary>> = :erlang.term_to_binary(other)
    {:exact, body}
  end

  defp literal_list([h | t], acc) when is_list(t), do: literal_list(t, [literal(h) | acc])
  defp literal_list([h | t], acc), do: {:list, Enum.reverse([literal(h) | acc]), literal(t)}
  defp literal_list([], acc), do: {:list, Enum.reverse(acc), :empty}

  # The compiler: pattern AST -> pattern data (with pins as unquote fragments when compiling a
  # macro), guard AST -> guard data, and the variables' names in index order.

  @doc false
  def compile!(ast, env) do
    {pattern_ast, guard_ast} =
      case ast do
        {:when, _, [p, g]} -> {p, g}
        p -> {p, nil}
      end

    {ir, vars} = pat(pattern_ast, %{}, env)
    names = vars |> Enum.sort_by(fn {_, i} -> i end) |> Enum.map(fn {n, _} -> n end)
    guard = if guard_ast == nil, do: true, else: guard(guard_ast, vars, env)

    if depth(ir) > @max_depth or depth(guard) > @max_depth,
      do: invalid!("the pattern is nested deeper than #{@max_depth} levels", meta_of(ast))

    {ir, guard, names}
  end

  defp pat({:_, _, ctx}, vars, _env) when is_atom(ctx), do: {:_, vars}

  defp pat({:__MODULE__, meta, ctx}, vars, env) when is_atom(ctx) do
    if env == nil or env.module == nil,
      do: invalid!("__MODULE__ only works in query/1 inside a module", meta)

    {{:atom, Atom.to_string(env.module)}, vars}
  end

  defp pat({name, meta, ctx}, vars, _env) when (is_atom(name) or is_map(name)) and is_atom(ctx) do
    cond do
      String.starts_with?(name_string(name), "_") -> {:_, vars}
      Map.has_key?(vars, name) -> {{:var, vars[name]}, vars}
      map_size(vars) >= @max_vars -> invalid!("more than #{@max_vars} variables", meta)
      true -> {{:var, map_size(vars)}, Map.put(vars, name, map_size(vars))}
    end
  end

  defp pat({:^, meta, [expr]}, vars, env) do
    if env == nil, do: invalid!("pins (^) only work in query/1, not in a pattern string", meta)
    {{:unquote, [], [quote(do: ElixirScope.Query.DSL.literal(unquote(expr)))]}, vars}
  end

  defp pat(a, vars, _env) when is_atom(a) or is_map(a), do: {{:atom, name_string(a)}, vars}
  defp pat(i, vars, _env) when is_integer(i), do: {literal(i), vars}
  defp pat(f, vars, _env) when is_float(f), do: {{:float, f}, vars}
  defp pat(b, vars, _env) when is_binary(b), do: {{:binary, b}, vars}

  defp pat({:<>, meta, [prefix, rest]}, vars, env) do
    unless is_binary(prefix), do: invalid!("the left side of <> must be a literal string", meta)
    {rest_ir, vars} = pat(rest, vars, env)

    case rest_ir do
      ok when ok == :_ or elem(ok, 0) in [:var, :binary] -> {{:prefix, prefix, rest_ir}, vars}
      _ -> invalid!("the right side of <> must be a variable, _ or a string", meta)
    end
  end

  defp pat({a, b}, vars, env), do: tuple([a, b], vars, env)
  defp pat({:{}, _, els}, vars, env), do: tuple(els, vars, env)
  defp pat([], vars, _env), do: {:empty, vars}

  defp pat(list, vars, env) when is_list(list) do
    {init, tail} =
      case List.last(list) do
        {:|, _, [h, t]} -> {Enum.drop(list, -1) ++ [h], t}
        _ -> {list, []}
      end

    {els, vars} = Enum.map_reduce(init, vars, &pat(&1, &2, env))
    {tail_ir, vars} = pat(tail, vars, env)
    {{:list, els, tail_ir}, vars}
  end

  defp pat({:%{}, _, kvs}, vars, env), do: map(kvs, vars, env)

  defp pat({:%, meta, [struct, {:%{}, _, kvs}]}, vars, env) do
    {pairs_ir, vars} = map(kvs, vars, env)
    {:map, pairs} = pairs_ir
    {{:map, [{{:atom, "__struct__"}, {:atom, module_name!(struct, meta, env)}} | pairs]}, vars}
  end

  defp pat({:__aliases__, meta, _} = alias_ast, vars, env),
    do: {{:atom, module_name!(alias_ast, meta, env)}, vars}

  defp pat({:-, _, [n]}, vars, _env) when is_number(n), do: {literal(-n), vars}

  defp pat(other, _vars, _env) do
    invalid!("unsupported construct #{show(other)} in a query pattern", meta_of(other))
  end

  defp tuple(els, vars, env) do
    {irs, vars} = Enum.map_reduce(els, vars, &pat(&1, &2, env))
    {{:tuple, irs}, vars}
  end

  defp map(kvs, vars, env) do
    {pairs, vars} =
      Enum.map_reduce(kvs, vars, fn {k, v}, vars ->
        {kir, _} = pat(k, %{}, env)

        if contains_var?(kir) or kir == :_,
          do: invalid!("map keys in query patterns must be literals", meta_of(k))

        {vir, vars} = pat(v, vars, env)
        {{kir, vir}, vars}
      end)

    {{:map, pairs}, vars}
  end

  defp depth(t) when is_tuple(t), do: 1 + (t |> Tuple.to_list() |> depth())
  defp depth(l) when is_list(l), do: Enum.reduce(l, 0, &max(depth(&1), &2))
  defp depth(_), do: 0

  defp contains_var?({:var, _}), do: true
  defp contains_var?(t) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.any?(&contains_var?/1)
  defp contains_var?(l) when is_list(l), do: Enum.any?(l, &contains_var?/1)
  defp contains_var?(_), do: false

  # A module's name as a string. In query/1 the alias is expanded in the caller; in a pattern
  # string it is taken literally ("Elixir.A.B"), since expanding or joining would create atoms.
  defp module_name!({:__aliases__, _, parts} = ast, meta, env) do
    cond do
      env != nil ->
        ast |> Macro.expand(env) |> Atom.to_string()

      Enum.all?(parts, &(is_atom(&1) or is_map(&1))) ->
        Enum.join(["Elixir" | Enum.map(parts, &name_string/1)], ".")

      true ->
        invalid!("unsupported module name #{show(ast)}", meta)
    end
  end

  defp module_name!(a, _meta, _env) when is_atom(a), do: Atom.to_string(a)

  defp module_name!(other, meta, _env),
    do: invalid!("unsupported struct name #{show(other)}", meta)

  # Guards.

  defp guard({:when, _, [a, b]}, vars, env), do: {:or, guard(a, vars, env), guard(b, vars, env)}
  defp guard({:and, _, [a, b]}, vars, env), do: {:and, guard(a, vars, env), guard(b, vars, env)}
  defp guard({:or, _, [a, b]}, vars, env), do: {:or, guard(a, vars, env), guard(b, vars, env)}
  defp guard({:not, _, [a]}, vars, env), do: {:not, guard(a, vars, env)}
  defp guard(true, _vars, _env), do: true

  defp guard({op, _, [a, b]}, vars, env) when op in @compare,
    do: {:cmp, op, operand(a, vars, env), operand(b, vars, env)}

  defp guard({:in, meta, [v, list]}, vars, env) do
    {:var, i} = var!(v, vars, meta)

    unless is_list(list),
      do: invalid!("the right side of `in` must be a literal list", meta)

    if length(list) > @max_in,
      do: invalid!("the list of `in` has #{length(list)} elements, more than #{@max_in}", meta)

    {:in, i, Enum.map(list, fn e -> operand_literal(e, env, meta) end)}
  end

  defp guard({test, meta, [v]}, vars, _env) when is_atom(test) or is_map(test) do
    case name_string(test) do
      "is_" <> type ->
        t = Enum.find(@types, &(Atom.to_string(&1) == type))
        unless t, do: invalid!("unsupported guard #{name_string(test)}/1", meta)
        {:var, i} = var!(v, vars, meta)
        {:is, t, i}

      _ ->
        invalid!("unsupported guard #{name_string(test)}/1", meta)
    end
  end

  defp guard(other, _vars, _env),
    do: invalid!("unsupported guard #{show(other)}", meta_of(other))

  defp operand({name, meta, ctx} = v, vars, _env)
       when (is_atom(name) or is_map(name)) and is_atom(ctx),
       do: var!(v, vars, meta)

  defp operand(other, _vars, env), do: {:lit, operand_literal(other, env, meta_of(other))}

  defp operand_literal({:^, meta, [expr]}, env, _) do
    if env == nil, do: invalid!("pins (^) only work in query/1, not in a pattern string", meta)
    {:unquote, [], [quote(do: ElixirScope.Query.DSL.literal(unquote(expr)))]}
  end

  defp operand_literal(ast, env, meta) do
    {ir, vars} = pat(ast, %{}, env)
    if vars != %{}, do: invalid!("guard values must be literals or bound variables", meta)
    exact(ir)
  end

  # A map in a guard is a value, compared whole: `%{}` there is only the empty map.
  defp exact({:map, pairs}), do: {:map_exact, Enum.map(pairs, fn {k, v} -> {k, exact(v)} end)}

  defp exact(t) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.map(&exact/1) |> List.to_tuple()

  defp exact(l) when is_list(l), do: Enum.map(l, &exact/1)
  defp exact(other), do: other

  defp var!({name, _, ctx}, vars, meta) when (is_atom(name) or is_map(name)) and is_atom(ctx) do
    case vars do
      %{^name => i} -> {:var, i}
      _ -> invalid!("the guard uses #{name_string(name)}, which the pattern does not bind", meta)
    end
  end

  defp var!(other, _vars, meta),
    do: invalid!("expected a variable, got #{show(other)}", meta)

  # Source text for an error message (names from a pattern string shown as written).
  defp show(ast) do
    ast
    |> Macro.prewalk(fn
      %{__name__: name} -> {:__aliases__, [], [name]}
      other -> other
    end)
    |> Macro.to_string()
  rescue
    _ -> inspect(ast)
  end

  defp meta_of({_, meta, _}) when is_list(meta), do: meta
  defp meta_of(_), do: []

  defp invalid!(msg, meta) do
    where = if meta[:line], do: " (line #{meta[:line]})", else: ""
    raise ArgumentError, "invalid query pattern: #{msg}#{where}"
  end
end
