// Starts GraphiQL on the page gpugate serves at / in dev mode. A file of its own, not an inline
// script, so that the page's Content-Security-Policy can refuse every inline script.
(function () {
  'use strict';
  var root = document.getElementById('graphiql');
  if (typeof React === 'undefined' || typeof ReactDOM === 'undefined' || typeof GraphiQL === 'undefined') {
    root.textContent = 'GraphiQL could not start: one of its scripts did not load (the browser console says which).';
    return;
  }
  // GraphiQL's dialogs insert one <style> element (react-remove-scroll), which reads the nonce the
  // Content-Security-Policy admits from this global, as webpack's convention has it.
  var nonce = document.querySelector('meta[name="style-nonce"]');
  if (nonce) {
    window.__webpack_nonce__ = nonce.content;
  }

  var defaultQuery = [
    '# gpugate explorer. Public queries need no token: press the run button (or Ctrl-Enter).',
    '#',
    '# To act as a user, put a bearer token in the Headers tab below:',
    '#   {"Authorization": "Bearer <token>"}',
    '# In dev mode a demo user\'s token comes from',
    '#   go run . dev token --server ' + location.origin + ' alice',
    '# and then, for example: { viewer { email devices(first: 3) { edges { node { id name } } } } }',
    '',
    '{',
    '  devices(first: 5, filter: {status: UP}) {',
    '    edges { node { id name status verification region gpuModel gpuCount } }',
    '    pageInfo { hasNextPage endCursor }',
    '  }',
    '  networkStats { devices gpus byStatus { status devices } }',
    '}',
    ''
  ].join('\n');

  var fetcher = GraphiQL.createFetcher({ url: new URL(root.dataset.endpoint, location.href).href });
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultQuery: defaultQuery,
    defaultEditorToolsVisibility: 'headers',
    isHeadersEditorEnabled: true,
    // A token kept in localStorage would outlive the tab and be readable by any script of this
    // origin: headers stay in memory, so a reload asks for the token again.
    shouldPersistHeaders: false,
    inputValueDeprecation: true
  }));
})();
