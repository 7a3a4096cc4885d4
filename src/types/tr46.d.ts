// The tr46 package (UTS #46, IDNA compatibility processing) ships no types.
declare module 'tr46' {
  interface Options {
    checkHyphens?: boolean;
    checkBidi?: boolean;
    checkJoiners?: boolean;
    useSTD3ASCIIRules?: boolean;
    processingOption?: 'nontransitional' | 'transitional';
    verifyDNSLength?: boolean;
    ignoreInvalidPunycode?: boolean;
  }
  const tr46: {
    /** The domain as A-labels, or null when processing finds an error. */
    toASCII(domainName: string, options?: Options): string | null;
    /** The domain as U-labels, and whether processing found an error. */
    toUnicode(domainName: string, options?: Options): { domain: string; error: boolean };
  };
  export default tr46;
}
