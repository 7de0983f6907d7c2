defmodule ElixirScope.UI.JSON do
  @moduledoc """
  JSON for the UI's HTTP API, written and read by `serde_json` in the NIF.

  `encode!/1` takes maps (binary, atom or integer keys), lists, UTF-8 binaries, numbers,
  booleans and `nil`; `decode/1` gives objects as maps with binary keys (no atom is made from
  input) and `null` as `nil`.

  ## Examples

      iex> ElixirScope.UI.JSON.encode!(%{events: [1, 2.5], name: "a", ok: true, none: nil})
      ~s({"events":[1,2.5],"name":"a","none":null,"ok":true})

      iex> ElixirScope.UI.JSON.decode(~s({"level": "full", "n": [1, null]}))
      {:ok, %{"level" => "full", "n" => [1, nil]}}

      iex> {:error, {:invalid_json, _message}} = ElixirScope.UI.JSON.decode("{oops")
  """

  alias ElixirScope.Native

  @doc """
  The JSON text of `term`. Raises `ArgumentError` naming the first part JSON cannot hold (a
  tuple, a pid, a binary that is not UTF-8, ...).
  """
  @spec encode!(term()) :: binary()
  def encode!(term) do
    case Native.json_encode(term) do
      {:ok, json} ->
        json

      {:error, {:not_json, what}} ->
        raise ArgumentError,
              "cannot write #{what} as JSON: use maps, lists, UTF-8 binaries, numbers, " <>
                "booleans and nil"
    end
  end

  @doc "Reads JSON `text`: `{:ok, term}` or `{:error, {:invalid_json, message}}`."
  @spec decode(binary()) :: {:ok, term()} | {:error, {:invalid_json, String.t()}}
  def decode(text) when is_binary(text), do: Native.json_decode(text)
end
