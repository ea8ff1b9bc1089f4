// The pages' GraphQL client. Every failure becomes an ApiError whose kind the pages turn into
// a clear message: the API is unreachable, busy (RATE_LIMITED / OVERLOADED with Retry-After),
// writes are switched off (DISABLED), or the API refused the request (its error code).

const endpoint = document.querySelector('meta[name="gpugate-endpoint"]')?.content || '/graphql';

export class ApiError extends Error {
  constructor(kind, message, { code = '', retryAfter = 0, status = 0 } = {}) {
    super(message);
    this.kind = kind; // network | busy | disabled | auth | forbidden | not-found | input | api
    this.code = code;
    this.retryAfter = retryAfter;
    this.status = status;
  }
}

const kinds = {
  RATE_LIMITED: 'busy', OVERLOADED: 'busy', DISABLED: 'disabled', UNAUTHENTICATED: 'auth',
  FORBIDDEN: 'forbidden', NOT_FOUND: 'not-found', BAD_USER_INPUT: 'input',
};

function retryAfterOf(resp, err) {
  const h = Number.parseInt(resp?.headers.get('Retry-After') || '', 10);
  if (h > 0) return h;
  const e = Number(err?.extensions?.retryAfterSeconds);
  return e > 0 ? e : 0;
}

// gql sends one operation and returns its data; it throws ApiError for a transport failure or
// for the first error of the response.
export async function gql(query, variables = {}, token = '') {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  let resp;
  try {
    resp = await fetch(endpoint, { method: 'POST', headers, body: JSON.stringify({ query, variables }), credentials: 'omit' });
  } catch (e) {
    throw new ApiError('network', 'The API could not be reached. Check your connection, or the gateway may be down.');
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON: judged by status below */ }
  const err = body?.errors?.[0];
  const code = err?.extensions?.code || '';
  if (resp.status === 429 || resp.status === 503 || code === 'RATE_LIMITED' || code === 'OVERLOADED') {
    const retryAfter = retryAfterOf(resp, err);
    const what = code === 'RATE_LIMITED' || resp.status === 429 ? 'rate-limited this request' : 'is overloaded';
    throw new ApiError('busy', `The gateway ${what} (${code || 'HTTP ' + resp.status}).`, { code: code || String(resp.status), retryAfter, status: resp.status });
  }
  if (!body) {
    throw new ApiError('network', `The API answered HTTP ${resp.status} without a GraphQL response; the gateway may be down or restarting.`, { status: resp.status });
  }
  if (err) {
    throw new ApiError(kinds[code] || 'api', err.message || 'The API refused the request.', { code, status: resp.status });
  }
  return body.data;
}
