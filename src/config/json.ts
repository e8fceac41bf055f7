/**
 * Parses JSON that may hold secrets (a config file, a users file). V8's
 * syntax error quotes the text around the fault, which may be a password,
 * a hash or an S3 key: the message keeps only what V8 says of the fault and
 * where it is (line and column, when V8 gives them).
 */
export function parseSecretJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const message = String((err as Error)?.message ?? err).replace(/, (?:\.\.\.)?".*$/s, '');
    throw new SyntaxError(`not valid JSON: ${message}`);
  }
}
