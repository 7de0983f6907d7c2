// The JSON API of ElixirScope.UI.API: GETs with query parameters, POSTs carrying the page's token.

const token = document.querySelector('meta[name="elixir-scope-token"]')?.content ?? "";

/** An error the server answered (its JSON `error`), or a network failure. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(response.status, `HTTP ${response.status}`);
  }
  if (!response.ok) throw new ApiError(response.status, body.error ?? `HTTP ${response.status}`);
  return body;
}

/** GET /api/<route>?params (empty and null parameters left out). */
export async function get(route, params = {}) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") query.set(k, v);
  }
  const qs = query.toString();
  return answer(await fetch(`/api/${route}${qs ? "?" + qs : ""}`, { headers: { "x-elixir-scope-token": token } }));
}

/** POST /api/<route> with a JSON body. */
export async function post(route, body) {
  return answer(
    await fetch(`/api/${route}`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-elixir-scope-token": token },
      body: JSON.stringify(body),
    }),
  );
}
