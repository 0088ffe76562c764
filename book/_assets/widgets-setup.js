// Loaded after require.js and before the widget manager (vendor/widgets/embed-amd.js).
(function () {
  // 1. The manager's webpack bundle finds its icon fonts next to its AMD module, which
  //    require.js would resolve relative to the page: point that module id at the folder
  //    that holds the bundle and its fonts.
  var here = document.currentScript.src;
  var base = here.slice(0, here.lastIndexOf("/")) + "/vendor/widgets";
  //    The bundled @jupyter-widgets/base and /controls modules find their own assets (the
  //    icon fonts of buttons and uploads) the same way, from their module ids.
  require.config({
    paths: { "@jupyter-widgets/html-manager/dist": base, "@jupyter-widgets": base },
  });

  // 2. The widgets typeset their labels with MathJax 2's MathJax.Hub.Queue whenever a
  //    window.MathJax exists; the book loads MathJax 3, which has no Hub. Forward the call.
  function shimMathJax2() {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub) {
      return;
    }
    mathjax.Hub = {
      Queue: function (job) {
        var element = job && job[2];
        var typeset = function () {
          return mathjax.typesetPromise ? mathjax.typesetPromise(element ? [element] : undefined) : null;
        };
        var ready = mathjax.startup && mathjax.startup.promise ? mathjax.startup.promise : Promise.resolve();
        ready.then(typeset).catch(function () {});
      },
    };
  }
  document.addEventListener("DOMContentLoaded", shimMathJax2);
  window.addEventListener("load", shimMathJax2);
})();
