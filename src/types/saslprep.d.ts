// The saslprep package (RFC 4013) ships no types.
declare module 'saslprep' {
  /**
   * Prepares a string with the SASLprep profile. Throws on prohibited
   * characters and bidi violations; rejects unassigned code points unless
   * allowUnassigned (RFC 3454 §7: stored strings vs queries).
   */
  function saslprep(input: string, opts?: { allowUnassigned?: boolean }): string;
  export = saslprep;
}
