"""Sphinx configuration of the course website (``make site``; ``scripts/build_site.py`` stages the sources).

The site shows the notebooks with their stored outputs -- nothing is executed -- and needs no network:
MathJax is served from the copy that the ``jupyter-server-mathjax`` package installs, and the ipywidgets
JavaScript (which would come from a CDN) is left out; widget outputs are replaced by a note, because every
widget in the course has a static figure drawn by the same function right next to it.
"""

project = "tinydiff"
author = "the tinydiff authors"
copyright = "the tinydiff authors, MIT License"

extensions = ["myst_nb"]
nb_execution_mode = "off"               # the stored outputs, exactly as nbval checks them
nb_ipywidgets_js = {}                   # no widget-manager script from a CDN
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False            # MyST would add a MathJax 3 configuration; ours is MathJax 2 (below)

# MathJax 2.7 from the jupyter-server-mathjax package, copied to _static/mathjax by the build script.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
                   "TeX": {"equationNumbers": {"autoNumber": "none"}},
                   "messageStyle": "none",
                   "fast-preview": {"disabled": True},   # the preview is drawn in MathJax's TeX fonts, not shipped
                   # the hidden MathML copy for screen readers asks for MathJax's TeX fonts too: off (the menu
                   # can still show MathML)
                   "menuSettings": {"CHTMLpreview": False, "assistiveMML": False},
                   # the package ships the STIX web fonts (not MathJax's TeX fonts): use them, never a font from a CDN
                   "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None,
                                # its font-loading probe, a font at url('about:blank'), is refused by the
                                # browser (a console error); a local() font that does not exist does the same job
                                "styles": {"@font-face": {"font-family": "MathJax_Blank",
                                                          "src": "local('MathJax_Blank_Missing')"}}}}

html_theme = "furo"
html_title = "tinydiff: diffusion models from first principles"
html_static_path = ["_static"]
html_show_sourcelink = False
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]  # README: only its course map, included by index.md
html_favicon = "_static/favicon.svg"
html_copy_source = False
