defmodule ElixirScope.Tracer do
  @moduledoc false
  # Sets and clears the VM's trace flags and trace patterns for a store. Every process gets the
  # store's NIF tracer ({:tracer, ElixirScope.Native, store_ref}); which flags it gets follows the
  # tracing level, so a low level costs the VM nothing for the kinds it does not keep.
  #
  # Coexistence (OTP 25/26 have one tracer per process): a process that already has another
  # tracer is reported and left alone, never taken over. Trace patterns are global to the VM
  # too: a function whose pattern another tool (:dbg, recon) set is not overwritten unless the
  # caller says so (`override: true`), ElixirScope only clears patterns that are still its own,
  # and one taken from it since is reported (`lost_patterns/2`).

  alias ElixirScope.{Native, Store}

  @flags [:send, :receive, :procs, :call]
  @all_flags [:send, :receive, :procs, :call, :set_on_spawn]

  # Modules whose call tracing would trace the tracer itself or the VM's own plumbing.
  @refused [:erlang, :erts_internal, :init, :prim_file, :prim_inet, :erl_tracer]

  @type result :: :ok | {:error, term()}

  @doc "The flags every traced process gets (the level filters natively)."
  def flags, do: @flags

  @doc "Whether `pid` is a live local process without a tracer."
  def free?(pid) do
    node(pid) == node() and safe_trace_info(pid, :tracer) == {:tracer, []}
  end

  @doc false
  def ours?(pid, %Store{} = store) do
    case safe_trace_info(pid, :tracer) do
      {:tracer, t} -> tracer_of?(t, store)
      _ -> false
    end
  end

  @doc "Whether `pid` is traced into `store` for itself, not only for a traced module's calls."
  @spec traced_for_itself?(pid(), Store.t()) :: boolean()
  def traced_for_itself?(pid, %Store{} = store) do
    ours?(pid, store) and
      match?(
        {:flags, flags} when is_list(flags) and flags != [:call],
        safe_trace_info(pid, :flags)
      )
  end

  @doc "Traces one local process."
  @spec trace_pid(pid(), Store.t(), [atom()]) :: result()
  def trace_pid(pid, %Store{} = store, flags) when is_pid(pid) do
    cond do
      node(pid) != node() ->
        {:error, {:remote_pid, pid}}

      true ->
        case safe_trace_info(pid, :tracer) do
          {:tracer, []} -> set(pid, store, flags)
          {:tracer, t} -> if tracer_of?(t, store), do: set(pid, store, flags), else: taken(pid, t)
          _ -> {:error, {:dead_process, pid}}
        end
    end
  end

  defp taken(pid, tracer), do: {:error, {:already_traced, pid, tracer}}

  # Whether a tracer (from :erlang.trace_info/2) is `store`'s.
  defp tracer_of?({Native, ref}, store), do: Store.handle?(store, ref)
  defp tracer_of?(_tracer, _store), do: false

  @doc "Traces every live process except `exclude`, and processes spawned from now on."
  @spec trace_all(Store.t(), [atom()], [pid()]) ::
          {:ok, %{traced: non_neg_integer(), skipped: list()}}
  def trace_all(%Store{} = store, flags, exclude) do
    {traced, skipped} =
      Enum.reduce(Process.list() -- exclude, {0, []}, fn pid, {n, skipped} ->
        case trace_pid(pid, store, flags) do
          :ok -> {n + 1, skipped}
          {:error, {:already_traced, _, _} = why} -> {n, [why | skipped]}
          {:error, _} -> {n, skipped}
        end
      end)

    case trace_new(store, flags) do
      :ok -> {:ok, %{traced: traced, skipped: Enum.reverse(skipped)}}
      {:error, _} = e -> e
    end
  end

  @doc "Traces processes spawned from now on."
  @spec trace_new(Store.t(), [atom()]) :: result()
  def trace_new(%Store{} = store, flags) do
    {:tracer, t} = :erlang.trace_info(:new_processes, :tracer)

    if t == [] or tracer_of?(t, store) do
      :erlang.trace(:new_processes, true, flags ++ [Store.tracer_spec(store)])
      :ok
    else
      {:error, {:already_traced, :new, t}}
    end
  end

  # The match specs ElixirScope sets: a pattern with another one is another tool's.
  @ms [{:_, [], [{:return_trace}, {:exception_trace}]}]
  @dynsup_ms [{[{:_, :_, :_}], [], [{:return_trace}, {:exception_trace}]}]
  # The hook on the first function of every new gen_server and gen_statem (see
  # hook_state_servers/0); its message action marks the pattern as ElixirScope's.
  @hook_ms [{:_, [], [{:message, :elixir_scope_state_server}]}]
  # A watch's pattern when it prints no returns: no return trace (which would cost every call
  # and keep a tail-recursive loop's frames); `{:message, true}` (the default message) marks
  # it as ElixirScope's.
  @watch_ms [{:_, [], [{:message, true}]}]
  # With the callers (`stack: true`): the process dump the tracer reads the stack from.
  @stack_ms [{:_, [], [{:message, {:process_dump}}]}]
  @stack_return_ms [{:_, [], [{:return_trace}, {:exception_trace}, {:message, {:process_dump}}]}]
  @hooks [{:gen, :init_it, 6}, {:gen, :init_it, 7}]

  @doc """
  Who set the trace pattern of `mfa`: `:none`, `:ours` (one of ElixirScope's match specs) or
  `:other` (any other pattern: `:dbg`, recon, a profiler).
  """
  @spec pattern_owner(mfa()) :: :none | :ours | :other
  def pattern_owner(mfa) do
    case :erlang.trace_info(mfa, :all) do
      {:all, false} ->
        :none

      {:all, info} ->
        cond do
          # call_count, call_time (cprof, eprof) or meta tracing alone: no call trace pattern.
          info[:traced] == false ->
            :none

          info[:match_spec] in [@ms, @dynsup_ms, @hook_ms, @watch_ms, @stack_ms, @stack_return_ms] ->
            :ours

          true ->
            :other
        end
    end
  end

  @doc """
  Call-traces a module's functions (exported, or all with `locals: true`). Functions whose
  pattern another tool set make it `{:error, {:pattern_in_use, mfas}}`, unless `override?`.
  """
  @spec trace_module(module(), boolean(), boolean()) ::
          {:ok, non_neg_integer()} | {:error, term()}
  def trace_module(mod, locals?, override? \\ false) when is_atom(mod) do
    with :ok <- allowed(mod),
         {:module, ^mod} <- Code.ensure_loaded(mod),
         :ok <- free_patterns(module_functions(mod, locals?), override?) do
      n = :erlang.trace_pattern({mod, :_, :_}, @ms, [if(locals?, do: :local, else: :global)])
      {:ok, n}
    else
      {:error, {:refused, _, _}} = e -> e
      {:error, {:pattern_in_use, _}} = e -> e
      {:error, _} -> {:error, {:module_not_loaded, mod}}
    end
  end

  @doc """
  Call-traces the functions `mfas` (local calls too), for `ElixirScope.watch/2`: with return
  and exception trace when `returns?`, else without. Functions whose pattern another tool set
  make it `{:error, {:pattern_in_use, mfas}}`; those with ElixirScope's pattern already keep
  it (a watch's pattern without returns gains them when `returns?`). Answers the functions it
  set a pattern on.
  """
  @spec trace_functions([mfa()], boolean(), boolean()) :: {:ok, [mfa()]} | {:error, term()}
  def trace_functions(mfas, returns?, stack? \\ false) do
    owners = Enum.map(mfas, &{&1, pattern_owner(&1)})

    case for({mfa, :other} <- owners, do: mfa) do
      [] ->
        ms = watch_ms(returns?, stack?)
        set = for {mfa, :none} <- owners, do: mfa
        Enum.each(set, &:erlang.trace_pattern(&1, ms, [:local]))

        # A pattern of ours gains what this watch asks for, never loses what it has.
        for {mfa, :ours} <- owners,
            {:match_spec, now} = :erlang.trace_info(mfa, :match_spec),
            wanted = upgrade(now, returns?, stack?),
            wanted != now,
            do: :erlang.trace_pattern(mfa, wanted, [:local])

        {:ok, set}

      taken ->
        {:error, {:pattern_in_use, taken}}
    end
  end

  @doc """
  Sets the pattern of `mfa` to exactly the one of these wants (returns, callers), local or
  global, when it is ElixirScope's: a watch's wants gone with it are taken away.
  """
  @spec set_pattern(mfa(), boolean(), boolean(), boolean()) :: :ok
  def set_pattern(mfa, returns?, stack?, local?) do
    if pattern_owner(mfa) == :ours do
      ms = watch_ms(returns?, stack?)

      # Local or global: whichever it was is cleared first.
      :erlang.trace_pattern(mfa, false, [:local])
      :erlang.trace_pattern(mfa, false, [:global])
      :erlang.trace_pattern(mfa, ms, [if(local?, do: :local, else: :global)])
    end

    :ok
  end

  # A watch's pattern: with return and exception trace, with the callers' process dump, both,
  # or neither.
  defp watch_ms(true, true), do: @stack_return_ms
  defp watch_ms(true, false), do: @ms
  defp watch_ms(false, true), do: @stack_ms
  defp watch_ms(false, false), do: @watch_ms

  defp upgrade(now, returns?, stack?) do
    returns? = returns? or now in [@ms, @stack_return_ms]
    stack? = stack? or now in [@stack_ms, @stack_return_ms]

    if now in [@ms, @watch_ms, @stack_ms, @stack_return_ms],
      do: watch_ms(returns?, stack?),
      else: now
  end

  @doc "Clears the patterns of `mfas` that are still ElixirScope's."
  @spec untrace_functions([mfa()]) :: :ok
  def untrace_functions(mfas) do
    for mfa <- mfas, pattern_owner(mfa) == :ours do
      :erlang.trace_pattern(mfa, false, [:local])
      :erlang.trace_pattern(mfa, false, [:global])
    end

    :ok
  end

  @doc "The functions of `mod` a watch pattern `{mod, f, a}` (with `:_` wildcards) covers."
  @spec functions_of({module(), atom(), non_neg_integer() | :_}) :: [mfa()]
  def functions_of({mod, f, a}) do
    for {_, ff, aa} = mfa <- module_functions(mod, true),
        f == :_ or ff == f,
        a == :_ or aa == a,
        do: mfa
  end

  defp free_patterns(_mfas, true), do: :ok

  defp free_patterns(mfas, false) do
    case Enum.filter(mfas, &(pattern_owner(&1) == :other)) do
      [] -> :ok
      taken -> {:error, {:pattern_in_use, taken}}
    end
  end

  # The functions a module-wide pattern applies to: exported ones, or all with locals.
  defp module_functions(mod, locals?) do
    for {f, a} <- mod.module_info(if(locals?, do: :functions, else: :exports)),
        not generated?(f),
        do: {mod, f, a}
  end

  # module_info/0,1 and compiler-generated functions take no pattern.
  defp generated?(f), do: f == :module_info or String.starts_with?(Atom.to_string(f), "-")

  @doc """
  Makes every traced process that starts a `gen_server` or `gen_statem` (an agent, a supervisor)
  tell the store's watcher (`Native.store_set_watcher/2`) its callback module, before its
  `init/1` runs, when the store does not watch that module yet: a pattern on `:gen.init_it/6,7`,
  left alone when another tool holds it. Returns whether the hook is ElixirScope's.
  """
  @spec hook_state_servers() :: boolean()
  def hook_state_servers do
    Enum.all?(@hooks, fn mfa ->
      case pattern_owner(mfa) do
        :ours -> true
        :other -> false
        :none -> :erlang.trace_pattern(mfa, @hook_ms, [:global]) == 1
      end
    end)
  end

  # A receive ... after that times out is traced as a `receive` of the atom `timeout` from no
  # process (the VM's clock service): the pattern marks exactly those, and keeps every receive.
  @timeout_ms [
    {[:_, :undefined, :timeout], [], [{:message, :elixir_scope_timeout}]},
    {:_, [], [true]}
  ]

  @doc """
  Sets the VM's receive trace pattern so that the tracer can tell a `receive ... after` timing
  out from a message (see `Native`'s tracer: such events become `:timeout` events). The
  pattern is global; one another tool set is left alone. Returns whether it is ElixirScope's.
  """
  @spec mark_timeouts() :: boolean()
  def mark_timeouts do
    case :erlang.trace_info(:receive, :match_spec) do
      {:match_spec, ms} when ms in [true, @timeout_ms] ->
        :erlang.trace_pattern(:receive, @timeout_ms, [])
        true

      _ ->
        false
    end
  end

  @doc "Clears the receive pattern of `mark_timeouts/0`, if it is still ElixirScope's."
  @spec unmark_timeouts() :: :ok
  def unmark_timeouts do
    if :erlang.trace_info(:receive, :match_spec) == {:match_spec, @timeout_ms},
      do: :erlang.trace_pattern(:receive, true, [])

    :ok
  end

  @doc "Removes the hook of `hook_state_servers/0`, where it is still ElixirScope's."
  @spec unhook_state_servers() :: :ok
  def unhook_state_servers do
    for mfa <- @hooks,
        pattern_owner(mfa) == :ours,
        do: :erlang.trace_pattern(mfa, false, [:global])

    :ok
  end

  @doc """
  Removes a module's call tracing: the patterns that are still ElixirScope's (another tool's
  pattern set since stays).
  """
  @spec untrace_module(module()) :: :ok
  def untrace_module(mod) do
    if Code.ensure_loaded?(mod) do
      for mfa <- module_functions(mod, true), pattern_owner(mfa) == :ours do
        :erlang.trace_pattern(mfa, false, [:local])
        :erlang.trace_pattern(mfa, false, [:global])
      end
    end

    :ok
  end

  @doc """
  The functions of `mod` (exported ones, or all with `locals?`) whose pattern ElixirScope set
  and another tool has since cleared or replaced: their calls are no longer captured.
  """
  @spec lost_patterns(module(), boolean()) :: [mfa()]
  def lost_patterns(mod, locals?) do
    if Code.ensure_loaded?(mod),
      do: Enum.reject(module_functions(mod, locals?), &(pattern_owner(&1) == :ours)),
      else: []
  end

  @doc "The state callbacks of `mod` whose pattern is no longer ElixirScope's."
  @spec lost_state_patterns(module()) :: [mfa()]
  def lost_state_patterns(mod) do
    if Code.ensure_loaded?(mod) do
      for {f, a} <- state_callbacks(mod, kind(mod)),
          pattern_owner({mod, f, a}) != :ours,
          do: {mod, f, a}
    else
      []
    end
  end

  @doc """
  The module whose callbacks hold `pid`'s state: the callback module of a GenServer or a
  `:gen_statem`, `:supervisor` for supervisors, `DynamicSupervisor` for dynamic ones,
  `Agent.Server` for agents; `nil` when `pid` is not such a process (or is gone).
  """
  @spec state_module(pid()) :: module() | nil
  def state_module(pid) do
    with {:dictionary, dict} <- safe_info(pid, :dictionary),
         {m, f, a} <- Keyword.get(dict, :"$initial_call") do
      case {m, f, a} do
        # DynamicSupervisor (and Task.Supervisor) name themselves like supervisors.
        {:supervisor, _, 1} ->
          if dynamic_supervisor?(pid), do: DynamicSupervisor, else: :supervisor

        {mod, :init, 1} ->
          if callback_module?(mod) or statem_module?(mod), do: mod

        # Agents name the function they were started with; their server is Agent.Server.
        _ ->
          if gen_server?(pid), do: Agent.Server
      end
    else
      _ -> nil
    end
  end

  @doc "Whether `mod` is a `:gen_statem` callback module."
  @spec statem_module?(module()) :: boolean()
  def statem_module?(mod) do
    Code.ensure_loaded?(mod) and function_exported?(mod, :callback_mode, 0) and
      function_exported?(mod, :init, 1)
  end

  @doc "Whether `mod` exports GenServer-style callbacks (`init/1` and a `handle_*`)."
  @spec callback_module?(module()) :: boolean()
  def callback_module?(mod) do
    Code.ensure_loaded?(mod) and function_exported?(mod, :init, 1) and
      (function_exported?(mod, :handle_call, 3) or function_exported?(mod, :handle_cast, 2) or
         function_exported?(mod, :handle_info, 2))
  end

  defp dynamic_supervisor?(pid) do
    match?(%DynamicSupervisor{}, :sys.get_state(pid, 1_000))
  catch
    :exit, _ -> false
  end

  defp gen_server?(pid) do
    match?({:current_function, {:gen_server, _, _}}, safe_info(pid, :current_function))
  end

  defp safe_info(pid, item) do
    if node(pid) == node(), do: Process.info(pid, item)
  end

  @doc """
  Records `mod`'s callback results as states in `store`: return trace on its exported GenServer
  callbacks, and the module registered with the store. Returns `:ok`, or an error when the
  module may not be traced.
  """
  @spec watch_state_module(module(), Store.t(), boolean()) :: :ok | {:error, term()}
  def watch_state_module(mod, %Store{} = store, override? \\ false) do
    kind = kind(mod)
    callbacks = for {f, a} <- state_callbacks(mod, kind), do: {mod, f, a}

    with :ok <- allowed_state_module(mod),
         :ok <- free_patterns(callbacks, override?),
         :ok <- register_states(mod, store) do
      for {_, f, a} <- callbacks do
        :erlang.trace_pattern({mod, f, a}, callback_ms(mod, f), [:global])
      end

      :ok
    end
  end

  @doc """
  Registers `mod` with `store` as a module whose callback results are states, leaving the
  trace patterns as they are: for a fresh store that goes on with a capture whose patterns
  are set already.
  """
  @spec register_states(module(), Store.t()) :: :ok | {:error, term()}
  def register_states(mod, %Store{} = store),
    do: Native.store_watch_states(Store.ref(store), mod, kind(mod))

  defp kind(mod), do: if(statem_module?(mod), do: :gen_statem, else: :gen_server)

  # DynamicSupervisor.init/1 is also its public flags builder (called with a keyword list, from
  # inside the callback); only the callback's {module, arg, name} argument counts.
  defp callback_ms(DynamicSupervisor, :init), do: @dynsup_ms
  defp callback_ms(_mod, _f), do: @ms

  # The exported functions whose results carry the state, by the core's rules of each behaviour
  # (a state machine's state functions, say, are its functions of arity 3 but terminate/3).
  defp state_callbacks(mod, kind),
    do: Native.trace_state_callbacks(kind, mod.module_info(:exports))

  # :supervisor's own callbacks are fine to trace (they run in supervisor processes only).
  defp allowed_state_module(:supervisor), do: :ok
  defp allowed_state_module(mod), do: allowed(mod)

  @doc """
  The state of `pid` right now (`{:ok, state}`), recorded in `store` as a `:state` event (mfa
  `{:sys, :get_state, 2}`); `:error` when the process does not answer within `timeout`.

  The event is recorded by the process itself, between two of its callbacks (a
  `:sys.replace_state/3` that keeps the state), so it lands before any state a later callback
  records: a snapshot never comes after a newer state.
  """
  @spec snapshot_state(pid(), Store.t(), timeout()) :: {:ok, term()} | :error
  def snapshot_state(pid, %Store{} = store, timeout \\ 1_000) do
    ref = Store.ref(store)

    state =
      :sys.replace_state(
        pid,
        fn state ->
          try do
            Native.store_record(ref, :state, self(), {:sys, :get_state, 2}, state)
          catch
            _, _ -> :ok
          end

          state
        end,
        timeout
      )

    {:ok, state}
  catch
    :exit, _ -> :error
  end

  @doc """
  Records in `store` that `pid` is traced from now on (a `:traced` event, with its initial call
  and registered name), so that a process is known before it does anything.
  """
  @spec mark_traced(pid(), Store.t()) :: :ok
  def mark_traced(pid, %Store{} = store) do
    name =
      case safe_info(pid, :registered_name) do
        {:registered_name, name} when is_atom(name) -> name
        _ -> nil
      end

    initial =
      try do
        :proc_lib.translate_initial_call(pid)
      catch
        _, _ -> nil
      end

    Native.store_record(Store.ref(store), :traced, pid, nil, {initial, name})
    :ok
  end

  @doc "Stops tracing `pid` if it is traced into `store`."
  @spec untrace_pid(pid(), Store.t()) :: :ok
  def untrace_pid(pid, store) do
    if ours?(pid, store), do: safe_trace(pid, false, @all_flags)
    :ok
  end

  @doc "Stops tracing every process traced into `store`, and new processes."
  @spec untrace_all(Store.t()) :: :ok
  def untrace_all(store) do
    untrace_new(store)
    Enum.each(Process.list(), &untrace_pid(&1, store))
  end

  @doc """
  Stops tracing processes (and new processes) whose only flag from `store` is `:call`: what is
  left once the last module is untraced and no process was traced for itself.
  """
  @spec untrace_call_only(Store.t()) :: :ok
  def untrace_call_only(store) do
    for pid <- Process.list(),
        ours?(pid, store),
        safe_trace_info(pid, :flags) == {:flags, [:call]} do
      safe_trace(pid, false, @all_flags)
    end

    case :erlang.trace_info(:new_processes, :flags) do
      {:flags, [:call]} -> untrace_new(store)
      _ -> :ok
    end
  end

  @doc """
  Moves every process (and new processes) traced into `from` to `to`, with the same flags. A
  process keeps one tracer at a time, so each is untraced and traced again: events in between
  (microseconds) are not captured. Returns how many processes moved.
  """
  @spec move_all(Store.t(), Store.t()) :: non_neg_integer()
  def move_all(from, to) do
    case {:erlang.trace_info(:new_processes, :tracer), :erlang.trace_info(:new_processes, :flags)} do
      {{:tracer, {Native, ref}}, {:flags, flags}} ->
        if Store.handle?(from, ref) do
          :erlang.trace(:new_processes, false, @all_flags)
          :erlang.trace(:new_processes, true, flags ++ [Store.tracer_spec(to)])
        end

      _ ->
        :ok
    end

    Enum.count(Process.list(), fn pid ->
      with true <- ours?(pid, from),
           {:flags, flags} <- safe_trace_info(pid, :flags),
           :ok <- safe_trace(pid, false, @all_flags) do
        safe_trace(pid, true, flags ++ [Store.tracer_spec(to)]) == :ok
      else
        _ -> false
      end
    end)
  end

  @doc "Stops tracing processes spawned from now on, if `store` traces them."
  @spec untrace_new(Store.t()) :: :ok
  def untrace_new(store) do
    case :erlang.trace_info(:new_processes, :tracer) do
      {:tracer, {Native, ref}} ->
        if Store.handle?(store, ref), do: :erlang.trace(:new_processes, false, @all_flags)

      _ ->
        :ok
    end

    :ok
  end

  defp set(pid, store, flags) do
    case safe_trace(pid, true, flags ++ [Store.tracer_spec(store)]) do
      :ok -> :ok
      :error -> {:error, {:dead_process, pid}}
      :taken -> {:error, {:already_traced, pid, safe_trace_info(pid, :tracer)}}
    end
  end

  defp allowed(mod) do
    own = Application.spec(:elixir_scope, :modules) || []

    if mod in @refused or mod in own do
      {:error, {:refused, mod, "tracing it would trace the VM or ElixirScope itself"}}
    else
      :ok
    end
  end

  # The process may exit between any two calls: badarg then means "dead", never a crash. The VM
  # answers how many processes it changed: 0 means another tracer took the process meanwhile.
  defp safe_trace(pid, on, flags) do
    case :erlang.trace(pid, on, flags) do
      1 -> :ok
      0 -> :taken
    end
  rescue
    ArgumentError -> :error
  end

  defp safe_trace_info(pid, item) do
    :erlang.trace_info(pid, item)
  rescue
    ArgumentError -> :undefined
  end
end
