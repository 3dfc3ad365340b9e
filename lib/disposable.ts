// The one global type the published types need: `Symbol.dispose`, which the classes'
// `[Symbol.dispose]()` members (and so `using`) name. TypeScript declares it only with the lib
// `esnext.disposable` (or `esnext`), @types/node with its own copy; a user's project that has
// neither would fail inside this package's .d.ts. This is the same declaration as theirs and
// merges with either. The classes do not `implements Disposable`: that global type exists only
// with those libs, and a class with `[Symbol.dispose]()` is Disposable to `using` all the same.
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
  }
}

export {};
