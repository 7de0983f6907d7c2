defmodule ElixirScope.Error do
  @moduledoc """
  Raised by the bang (`!`) variants of ElixirScope's functions.

  The `:reason` field holds the same term the non-bang variant returns as `{:error, reason}`, so
  code can match on it:

      try do
        ElixirScope.trace!(:no_such_name)
      rescue
        e in ElixirScope.Error -> e.reason
      end
      #=> {:unknown_target, :no_such_name}
  """
  defexception [:reason]

  @type t :: %__MODULE__{reason: term()}

  @impl true
  def message(%__MODULE__{reason: reason}), do: describe(reason)

  @doc """
  A sentence describing an error reason returned by ElixirScope.

  ## Examples

      iex> ElixirScope.Error.describe(:not_running)
      "ElixirScope is not running; start it with ElixirScope.start/1"
  """
  @spec describe(term()) :: String.t()
  def describe(:not_running), do: "ElixirScope is not running; start it with ElixirScope.start/1"
  def describe(:already_running), do: "ElixirScope is already running; stop it first"
  def describe(:store_closed), do: "the store is closed"
  def describe({:dead_process, pid}), do: "process #{inspect(pid)} is not alive"

  def describe({:unknown_target, t}),
    do: "#{inspect(t)} is neither a registered name nor a module"

  def describe({:already_traced, pid, tracer}),
    do: "process #{inspect(pid)} is already traced by #{inspect(tracer)}; it was left alone"

  def describe({:refused, mod, why}), do: "refusing to trace #{inspect(mod)}: #{why}"
  def describe({:module_not_loaded, mod}), do: "module #{inspect(mod)} could not be loaded"
  def describe({:remote_pid, pid}), do: "#{inspect(pid)} lives on another node"
  def describe(other), do: "ElixirScope error: #{inspect(other)}"
end
