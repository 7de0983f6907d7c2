defmodule Mix.Tasks.Compile.ElixirScopeNativeTest do
  use ExUnit.Case, async: false

  alias Mix.Tasks.Compile.ElixirScopeNative

  test "does nothing when the library is newer than every Rust source" do
    # The suite's own compile just built it.
    assert ElixirScopeNative.run([]) == {:noop, []}
  end

  test "without cargo it fails with a message saying how to get it" do
    home = Path.join(System.tmp_dir!(), "es_no_cargo_#{System.unique_integer([:positive])}")
    File.mkdir_p!(home)
    saved = for k <- ["PATH", "HOME"], do: {k, System.get_env(k)}

    try do
      System.put_env("PATH", "/nonexistent")
      System.put_env("HOME", home)
      assert ElixirScopeNative.find_cargo() == nil

      error = assert_raise Mix.Error, fn -> ElixirScopeNative.run(["--force"]) end
      assert error.message =~ "ElixirScope needs Rust's cargo to build its native library"
      assert error.message =~ "rustup"
    after
      Enum.each(saved, fn {k, v} -> if v, do: System.put_env(k, v), else: System.delete_env(k) end)

      File.rm_rf!(home)
    end

    assert is_binary(ElixirScopeNative.find_cargo())
  end
end
