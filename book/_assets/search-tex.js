// Search results quote the pages' text, where the maths is still TeX (MathJax typesets
// it only on the page itself): show "n - 1" and "√2", not "\(n - 1\)" and "\(\sqrt{2}\)".
(function () {
  var SYMBOLS = {
    sqrt: "√", times: "×", cdot: "·", le: "≤", leq: "≤", ge: "≥", geq: "≥", approx: "≈",
    sum: "Σ", phi: "φ", varphi: "φ", sigma: "σ", mu: "μ", pi: "π", Delta: "Δ", lambda: "λ",
    in: "∈", setminus: "∖", cup: "∪", ldots: "…", dots: "…", infty: "∞",
  };

  function plainMaths(text) {
    return text
      .replace(/\\[()[\]]|\$\$/g, "")
      .replace(/\\(?:mathrm|text|mathbf|operatorname)\{([^}]*)\}/g, "$1")
      .replace(/\\([A-Za-z]+)/g, function (_, name) {
        return SYMBOLS[name] || name;
      })
      .replace(/[{}]/g, "");
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof Search === "undefined" || !Search.htmlToText) {
      return; // not the search page
    }
    var htmlToText = Search.htmlToText;
    Search.htmlToText = function (html, anchor) {
      return plainMaths(htmlToText(html, anchor));
    };
  });
})();
