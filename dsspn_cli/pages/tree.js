// The concept tree page (dsspn hierarchy show --format html): the tree folded to a depth,
// unfolded and folded by click, searched by name, synset or dataset label, and the chosen
// concept's synset, definition, labels per dataset and neuron beside it.
// Only the unfolded part of the tree is in the document, so 2,000 concepts stay quick.
"use strict";

(() => {
  const {el, readData, notice, shape, ancestors, upward, unfoldAbove} = dsspn;
  const doc = readData();
  if (!doc) {
    notice("This is dsspn's page template, without a tree: write one with " +
           "'dsspn hierarchy show --format html -o tree.html'.", "info");
    return;
  }
  const concepts = doc.concepts;
  const count = concepts.length;
  const colours = Object.fromEntries(doc.datasets.map((d) => [d.name, d.colour]));
  const {root, children, depth, order} = shape(concepts);
  const height = depth.reduce((a, b) => Math.max(a, b), 0);
  const RESULTS_SHOWN = 100;     // search results listed; all of them are marked in the tree
  const REVEAL_AT_MOST = 300;    // more matches than this are listed, not all unfolded

  // Concepts below each one, and the datasets that label it or a concept below it, summed
  // from the leaves up.
  const below = new Int32Array(count);
  const defines = concepts.map((c) => new Set(Object.keys(c.labels)));
  upward(concepts, order, (i, parent) => {
    below[parent] += below[i] + 1;
    for (const name of defines[i]) defines[parent].add(name);
  });
  const searchText = concepts.map((c) => [c.name, c.synset || "",
    ...Object.values(c.labels).flat().map((label) => label[1])].join("\n").toLowerCase());

  const expanded = new Uint8Array(count);
  const rows = new Array(count);      // the drawn row of each concept
  const lists = new Array(count);     // the drawn list of its children
  let selected = -1;
  let focus = null;                   // a dataset whose concepts are marked
  let matches = [];
  let matched = new Set();
  let cursor = -1;
  let searched = "";

  const treeBox = document.getElementById("tree");
  const details = document.getElementById("details");
  const depthInput = document.getElementById("depth");
  const depthValue = document.getElementById("depth-value");
  const searchInput = document.getElementById("search");
  const matchesText = document.getElementById("matches");
  const results = document.getElementById("results");

  const KINDS = {wordnet: "added from WordNet", other: "'-other' sibling"};

  function labelText(labels) {
    return labels.map((label) => `${label[1]} [${label[0]}]`).join(", ");
  }

  function dotColour(c) {
    const first = Object.keys(c.labels)[0];
    return first ? colours[first] || "#777" : "#bbb";
  }

  function row(i) {
    const c = concepts[i];
    const kids = children[i].length;
    const chips = Object.entries(c.labels).map(([dataset, labels]) => el("span", {
      class: "chip", style: {"--chip": colours[dataset] || "#999"},
      title: `${dataset}: ${labelText(labels)}`,
    }, `${dataset}: ${labels.map((label) => label[1]).join(", ")}`));
    const classes = ["row"];
    if (c.neuron !== null) classes.push("neuron");
    if (i === selected) classes.push("selected");
    if (matched.has(i)) classes.push("match");
    if (focus !== null && !defines[i].has(focus)) classes.push("dim");
    const element = el("div", {
      class: classes.join(" "), role: "treeitem", "data-id": i,
      "aria-expanded": kids ? String(Boolean(expanded[i])) : null,
      on: {click: () => { choose(i); if (kids) toggle(i); }},
    },
    el("span", {class: "toggle", "aria-hidden": "true"}, kids ? (expanded[i] ? "▾" : "▸") : ""),
    el("span", {class: "swatch", style: {background: dotColour(c)},
                title: Object.keys(c.labels).join(", ") || "no dataset labels it"}),
    el("span", {class: "id"}, String(c.id)),
    el("span", {class: "name"}, c.name),
    c.synset ? el("span", {class: "synset"}, c.synset) : null,
    KINDS[c.kind] ? el("span", {class: "kind"}, KINDS[c.kind]) : null,
    el("span", {class: "chips"}, chips),
    kids ? el("span", {class: "below", hidden: Boolean(expanded[i])},
              `${kids} children, ${below[i]} below`) : null);
    rows[i] = element;
    return element;
  }

  function item(i) {
    const li = el("li", {}, row(i));
    if (expanded[i]) li.append(list(i));
    return li;
  }

  function list(i) {
    lists[i] = el("ul", {role: "group"}, children[i].map(item));
    return lists[i];
  }

  /** Draw the tree again from `expanded` (after a change to many concepts at once). */
  function draw() {
    rows.fill(undefined);
    lists.fill(undefined);
    treeBox.replaceChildren(el("ul", {}, item(root)));
  }

  function toggle(i) {
    expanded[i] = expanded[i] ? 0 : 1;
    const element = rows[i];
    element.setAttribute("aria-expanded", String(Boolean(expanded[i])));
    element.querySelector(".toggle").textContent = expanded[i] ? "▾" : "▸";
    element.querySelector(".below").hidden = Boolean(expanded[i]);
    if (expanded[i] && !lists[i]) element.parentElement.append(list(i));
    else if (lists[i]) lists[i].hidden = !expanded[i];
  }

  function unfoldTo(level) {
    unfoldAbove(expanded, depth, level);
    depthInput.value = String(level);
    depthValue.textContent = String(level);
    draw();
  }

  /** Unfold the concept's ancestors and draw the tree, so that its row is there. */
  function reveal(i) {
    let changed = false;
    for (const a of ancestors(concepts, i)) {
      if (!expanded[a]) { expanded[a] = 1; changed = true; }
    }
    if (changed || !rows[i]) draw();
    rows[i].scrollIntoView({block: "center"});
  }

  function link(i, text) {
    return el("a", {role: "link", tabindex: 0, on: {click: (event) => {
      event.preventDefault();
      reveal(i);
      choose(i);
    }}}, text || concepts[i].name);
  }

  function choose(i) {
    if (selected >= 0 && rows[selected]) rows[selected].classList.remove("selected");
    selected = i;
    if (rows[i]) rows[i].classList.add("selected");
    const c = concepts[i];
    const kids = children[i];
    const path = ancestors(concepts, i);
    const wordnet = [];
    if (c.synset) {
      wordnet.push(el("div", {class: "synset-name"}, el("code", {}, c.synset)));
      wordnet.push(c.definition ? el("p", {class: "definition"}, c.definition)
        : el("p", {class: "muted"}, doc.wordnet ? "WordNet 3.0 has no such synset"
          : "no definition: WordNet was not found when this page was written"));
    } else {
      wordnet.push(el("p", {class: "muted"}, c.kind === "other"
        ? "no synset: the '-other' sibling stands for everything else under its parent"
        : "no synset: a group of the label sets"));
    }
    const neuron = c.neuron !== null
      ? `semantic neuron ${c.neuron}: chooses among its ${kids.length} children`
      : kids.length === 1 ? "no neuron: one child" : "no neuron: a leaf";
    const labelled = Object.entries(c.labels);
    // Through el(), which flattens the lists and leaves out what is null.
    details.replaceChildren(el("div", {},
      el("h2", {}, c.name),
      el("div", {class: "muted"}, `concept ${c.id} · depth ${depth[i]}`
         + (KINDS[c.kind] ? ` · ${KINDS[c.kind]}` : "")),
      el("div", {class: "path"},
         path.flatMap((a) => [link(a), el("span", {class: "muted"}, "›")]),
         el("strong", {}, c.name)),
      el("h3", {}, "WordNet"), wordnet,
      el("h3", {}, "Neuron"), el("p", {}, neuron),
      el("h3", {}, "Labels"),
      labelled.length
        ? el("table", {class: "plain"}, el("tr", {}, el("th", {}, "dataset"), el("th", {}, "id"),
                                              el("th", {}, "label")),
          labelled.flatMap(([dataset, labels]) => labels.map((label) => el("tr", {},
            el("td", {}, el("span", {class: "chip", style: {"--chip": colours[dataset] || "#999"}},
                            dataset)),
            el("td", {}, String(label[0])), el("td", {}, label[1])))))
        : el("p", {class: "muted"}, "no dataset labels it" +
             (defines[i].size ? ` (below it: ${[...defines[i]].join(", ")})` : "")),
      kids.length ? el("h3", {}, `Children (${kids.length}; ${below[i]} concepts below)`) : null,
      kids.length ? el("ul", {class: "children"}, kids.map((k) => el("li", {}, link(k)))) : null));
  }

  function search(text) {
    const query = text.trim().toLowerCase();
    searched = text;
    matches = [];
    if (query) {
      for (let i = 0; i < count; i++) if (searchText[i].includes(query)) matches.push(i);
    }
    matched = new Set(matches);
    cursor = -1;
    if (matches.length && matches.length <= REVEAL_AT_MOST) {
      for (const i of matches) for (const a of ancestors(concepts, i)) expanded[a] = 1;
    }
    draw();
    matchesText.textContent = !query ? "" : matches.length === 0 ? "no match"
      : `${matches.length} match${matches.length === 1 ? "" : "es"}` +
        (matches.length > 1 ? " (Enter: next)" : "");
    results.hidden = matches.length === 0;
    results.replaceChildren(...matches.slice(0, RESULTS_SHOWN).map((i) => el("li", {},
      link(i), " ", el("span", {class: "where"}, whereFound(i, query)))));
    if (matches.length > RESULTS_SHOWN) {
      results.append(el("li", {class: "muted"}, `and ${matches.length - RESULTS_SHOWN} more`));
    }
  }

  /** What matched, when it is not the name: the synset or a dataset's label. */
  function whereFound(i, query) {
    const c = concepts[i];
    const path = ancestors(concepts, i).map((a) => concepts[a].name).join(" › ");
    if (c.name.toLowerCase().includes(query)) return path;
    if ((c.synset || "").toLowerCase().includes(query)) return `${c.synset} · ${path}`;
    for (const [dataset, labels] of Object.entries(c.labels)) {
      const label = labels.find((l) => l[1].toLowerCase().includes(query));
      if (label) return `${dataset}: ${label[1]} [${label[0]}] · ${path}`;
    }
    return path;
  }

  function next() {
    if (!matches.length) return;
    cursor = (cursor + 1) % matches.length;
    reveal(matches[cursor]);
    choose(matches[cursor]);
  }

  // --------------------------------------------------------------------- header, controls
  document.title = doc.title ? `${doc.title} · dsspn concept tree` : "dsspn concept tree";
  document.getElementById("title").textContent = doc.title || "Concept tree";
  const neurons = concepts.filter((c) => c.neuron !== null).length;
  document.getElementById("summary").textContent =
    `${count} concepts, ${neurons} semantic neurons, depth ${height}; ` +
    `datasets (click one to mark the concepts it labels):`;
  document.getElementById("legend").replaceChildren(...doc.datasets.map((d) => el("span", {
    class: "chip", role: "button", tabindex: 0, style: {"--chip": d.colour}, title: d.title,
    "data-dataset": d.name,
    on: {click: (event) => {
      focus = focus === d.name ? null : d.name;
      for (const chip of document.querySelectorAll(".legend .chip")) {
        chip.classList.toggle("focus", chip.dataset.dataset === focus);
      }
      event.currentTarget.blur();
      draw();
    }},
  }, `${d.name} (${concepts.filter((c) => d.name in c.labels).length})`)));
  if (!doc.wordnet) {
    notice("WordNet was not found when this page was written, so concepts have no " +
           "definitions (their synsets are shown). " + (doc.wordnetProblem || ""), "info");
  }

  depthInput.max = String(height);
  depthInput.addEventListener("input", () => unfoldTo(Number(depthInput.value)));
  document.getElementById("unfold-all").addEventListener("click", () => unfoldTo(height));
  document.getElementById("fold-all").addEventListener("click", () => unfoldTo(0));
  let pending = 0;
  searchInput.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(() => search(searchInput.value), 120);
  });
  searchInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      clearTimeout(pending);
      if (searchInput.value !== searched) search(searchInput.value);
      next();
    } else if (event.key === "Escape") {
      searchInput.value = "";
      search("");
    }
  });

  unfoldTo(Math.max(0, Math.min(height, doc.fold)));
  choose(root);
})();
