defmodule ElixirScope.Track do
  @moduledoc """
  Line-by-line variable tracking: every binding inside an annotated function, with its value
  and source line, for each call — without changing what the code does.

      defmodule MyApp.Pricing do
        use ElixirScope.Track

        @scope true
        def total(items, discount) do
          subtotal = Enum.sum(for %{price: p, qty: q} <- items, do: p * q)
          total = subtotal * (1 - discount)
          Float.round(total, 2)
        end
      end

      iex> MyApp.Pricing.total([%{price: 10.0, qty: 2}], 0.1)
      iex> ElixirScope.Query.variables({MyApp.Pricing, :total, 2})
      [%{name: :items, value: [...], line: 5}, %{name: :discount, ...}, %{name: :subtotal, value: 20.0, line: 6}, ...]
      iex> IO.puts(ElixirScope.Query.source_view({MyApp.Pricing, :total, 2}))

  ## Annotations

    * `@scope true` before a `def`/`defp` tracks every clause of that function.
    * `@scope vars: [:a, :b]` tracks only those variables.
    * `@scope false` excludes a function from `use ElixirScope.Track, all: true`.
    * `use ElixirScope.Track, all: true` tracks every function of the module.

  What is recorded: the parameters on entry, then each variable right after it is bound — by
  `=` (destructuring included), and by the clauses of `case`, `cond`, `with`, `receive`, `try`
  (`rescue`/`catch`/`else`), anonymous functions and comprehensions. Pinned (`^x`), ignored
  (`_x`) and macro-generated variables are not recorded. Bindings group per call: each call
  records an entry event, and its bindings point to it.

  ## Cost and configuration

  When no capture is running, a tracked call costs one `:persistent_term` read. With
  `config :elixir_scope, track: false` — the default in `:prod` unless set to `true` — the macro
  compiles the original code, untouched.

  ## Safety

  The rewrite only adds reads of variables after they are bound: values, exceptions, guards,
  pins and shadowing are unchanged, and a body's last expression stays last (a tail call stays a
  tail call; the one exception is a body that ends in a match, whose value is kept through a
  temporary). Recording goes through a NIF that never blocks (a full store drops the event).
  """

  alias ElixirScope.Track.Transform

  defmacro __using__(opts) do
    all = Keyword.get(opts, :all, false)

    quote do
      @on_definition ElixirScope.Track
      @before_compile ElixirScope.Track
      Module.register_attribute(__MODULE__, :scope, accumulate: false)
      Module.register_attribute(__MODULE__, :elixir_scope_clauses, accumulate: true)
      Module.put_attribute(__MODULE__, :elixir_scope_track_all, unquote(all))
      Module.put_attribute(__MODULE__, :elixir_scope_tracked, %{})
    end
  end

  # Each definition: note whether its function is tracked (by `@scope`, or earlier clauses, or
  # `all: true`) and keep the clause's code for `__before_compile__`.
  @doc false
  def __on_definition__(env, kind, name, args, guards, body) when kind in [:def, :defp] do
    mod = env.module
    scope = Module.get_attribute(mod, :scope)
    if scope != nil, do: Module.put_attribute(mod, :scope, nil)
    tracked = Module.get_attribute(mod, :elixir_scope_tracked) || %{}
    key = {name, length(args)}

    opts =
      cond do
        Module.get_attribute(mod, :elixir_scope_redefining) -> nil
        scope == false -> nil
        scope == true -> []
        is_list(scope) -> Keyword.take(scope, [:vars])
        Map.has_key?(tracked, key) -> tracked[key]
        Module.get_attribute(mod, :elixir_scope_track_all) -> []
        true -> nil
      end

    if opts != nil and body != nil do
      Module.put_attribute(mod, :elixir_scope_tracked, Map.put(tracked, key, opts))

      Module.put_attribute(
        mod,
        :elixir_scope_clauses,
        {kind, name, args, guards, body, env.line, opts}
      )
    end
  end

  def __on_definition__(_env, _kind, _name, _args, _guards, _body), do: :ok

  # Every tracked function is made overridable and defined again, clause by clause, rewritten.
  defmacro __before_compile__(env) do
    mod = env.module
    clauses = mod |> Module.get_attribute(:elixir_scope_clauses) |> Enum.reverse()
    Module.put_attribute(mod, :elixir_scope_redefining, true)

    if clauses == [] or not enabled?() do
      :ok
    else
      funs =
        clauses
        |> Enum.map(fn {_, name, args, _, _, _, _} -> {name, length(args)} end)
        |> Enum.uniq()

      defs =
        for {kind, name, args, guards, body, line, opts} <- clauses do
          args = Enum.map(args, &Transform.strip_default/1)
          head = Enum.reduce(guards, {name, [line: line], args}, &{:when, [line: line], [&2, &1]})
          body = body_keyword(body)
          expr = Transform.clause(head, body, {mod, name, length(args)}, opts)
          quote do: Kernel.unquote(kind)(unquote(head), unquote(expr))
        end

      quote do
        defoverridable unquote(funs)
        unquote_splicing(defs)
      end
    end
  end

  # A definition's body as on_definition gives it: `[do: body]`, with `rescue:`, `catch:`,
  # `else:`, `after:` for an implicit try.
  defp body_keyword([{:do, _} | _] = kw), do: kw
  defp body_keyword(body), do: [do: body]

  @doc """
  Whether tracked functions are rewritten at compile time: `config :elixir_scope, track: bool`,
  by default true except in the `:prod` Mix environment.
  """
  @spec enabled?() :: boolean()
  def enabled? do
    default =
      not (Code.ensure_loaded?(Mix) and function_exported?(Mix, :env, 0) and Mix.env() == :prod)

    Application.get_env(:elixir_scope, :track, default)
  end
end
