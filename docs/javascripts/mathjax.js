// MathJax 3 reads the spans and divs that pymdownx.arithmatex (generic: true) writes; the
// renderer itself (assets/mathjax/tex-svg-full.js) is copied into the site by docs/_hooks.py
// from the installed django-static-mathjax package, so the pages typeset offline.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true},
  // no context menu: its accessibility explorer would fetch speech rules from a CDN
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex", enableMenu: false},
  svg: {fontCache: "global"},
};

// Material's instant navigation swaps the page without reloading scripts: typeset each new page
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
